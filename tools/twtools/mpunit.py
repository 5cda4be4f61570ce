# Runs inside the MicroPython unix port: imports one shared test file and runs its test_* functions,
# printing one "@@RESULT <json>" line per test for the pytest plugin (host_tests/conftest.py).
# Usage: micropython mpunit.py <test dir> <module name>
import gc
import json
import sys

test_dir, name = sys.argv[1], sys.argv[2]
sys.path.insert(0, test_dir)
mod = __import__(name)
names = sorted(n for n in dir(mod) if n.startswith("test_") and callable(getattr(mod, n)))
for n in names:
    gc.collect()
    try:
        getattr(mod, n)()
        print("@@RESULT " + json.dumps({"name": n, "ok": True}))
    except Exception as e:  # noqa: BLE001 - every failure is reported, the run goes on
        import io

        buf = io.StringIO()
        sys.print_exception(e, buf)
        print("@@RESULT " + json.dumps({"name": n, "ok": False, "error": buf.getvalue()}))
