"""Test setup shared by all host tests.

Files under host_tests/device/ hold device-logic tests written for BOTH runtimes: pytest runs them on
CPython (device modules from device/, simulated hardware as fakes), and this plugin runs the same test
functions inside the MicroPython unix port with the device code compiled to .mpy. Each test therefore
shows up twice: ``test_x`` (CPython) and ``test_x[micropython]``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HW = ROOT / "tools" / "twtools" / "vboard" / "hw"
for p in (ROOT / "device", ROOT / "host_tests" / "shims", HW, ROOT / "host_tests" / "device"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

DEVICE_TESTS = ROOT / "host_tests" / "device"
MP_HEAP = "1M"
_results: dict[Path, dict[str, dict]] = {}
_build: Path | None = None


def _mp_build(tmp_root: Path) -> Path:
    global _build
    if _build is None:
        from twtools.build import compile_tree

        out = tmp_root / "mp-lib"
        compile_tree(out)
        _build = out
    return _build


def test_certs(tmp_root: Path) -> Path:
    """TLS material for the device tests' https servers (both runtimes), made once per session with
    twtools.tls.make_test_certs and named by $TW_CERTS (the MicroPython runs inherit it): the CA in DER
    (the device's ca_file) and per case (good, self_signed, wrong_name, expired, other_ca) the PEM
    chain and key (CPython's ssl) and <case>.der / <case>.key.der, the leaf and its key in DER
    (MicroPython's tls takes DER)."""
    if os.environ.get("TW_CERTS"):
        return Path(os.environ["TW_CERTS"])
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from twtools import tls

    out = tmp_root / "tls-certs"
    paths = tls.make_test_certs(out)
    for case in ("good", "self_signed", "wrong_name", "expired", "other_ca"):
        leaf = x509.load_pem_x509_certificate(paths[f"{case}_cert"].read_bytes())
        (out / f"{case}.der").write_bytes(tls.cert_der(leaf))
        key = serialization.load_pem_private_key(paths[f"{case}_key"].read_bytes(), password=None)
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        (out / f"{case}.key.der").write_bytes(der)
    os.environ["TW_CERTS"] = str(out)
    return out


@pytest.fixture(autouse=True)
def _device_test_certs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """$TW_CERTS for the device tests on CPython (made at the first one that runs)."""
    if Path(str(request.node.path)).parent == DEVICE_TESTS:
        test_certs(Path(tmp_path_factory.getbasetemp()))


def _run_file(path: Path, tmp_root: Path) -> dict[str, dict]:
    if path not in _results:
        test_certs(tmp_root)
        from twtools.vboard.runner import micropython_bin

        lib = _mp_build(tmp_root)
        work = tmp_root / ("mp-" + path.stem)
        work.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPY")}
        # .frozen: the port's built-in asyncio; device code as .mpy only (no device/ sources on the path)
        env["MICROPYPATH"] = f".frozen:{HW}:{lib}"
        env["TW_TMP"] = str(work)
        proc = subprocess.run(
            [
                micropython_bin(),
                "-X",
                f"heapsize={MP_HEAP}",
                str(ROOT / "tools" / "twtools" / "mpunit.py"),
                str(path.parent),
                path.stem,
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        results = {}
        for line in proc.stdout.splitlines():
            if line.startswith("@@RESULT "):
                r = json.loads(line[9:])
                results[r["name"]] = r
        if proc.returncode != 0:
            results["__crash__"] = {
                "ok": False,
                "error": f"micropython exited {proc.returncode}\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}",
            }
        _results[path] = results
    return _results[path]


class MicroPythonItem(pytest.Item):
    def __init__(self, *, func: str, **kw):
        super().__init__(**kw)
        self.func = func

    def runtest(self) -> None:
        tmp_root = Path(self.config._tmp_path_factory.getbasetemp())  # type: ignore[attr-defined]
        results = _run_file(self.path, tmp_root)
        r = results.get(self.func)
        if r is None:
            crash = results.get("__crash__", {}).get("error", "")
            raise AssertionError(f"{self.func} did not run on MicroPython\n{crash}")
        if not r["ok"]:
            raise AssertionError("failed on the MicroPython unix port:\n" + r["error"])

    def repr_failure(self, excinfo):  # type: ignore[override]
        return str(excinfo.value)

    def reportinfo(self):
        return self.path, None, f"{self.func}[micropython]"


class MicroPythonFile(pytest.File):
    def collect(self):
        tree = ast.parse(self.path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield MicroPythonItem.from_parent(self, name=f"{node.name}[micropython]", func=node.name)


def pytest_collect_file(parent, file_path: Path):
    if file_path.parent == DEVICE_TESTS and file_path.name.startswith("test_") and file_path.suffix == ".py":
        return MicroPythonFile.from_parent(parent, path=file_path, name=file_path.name + "@micropython")
    return None


# The files that take longest (seconds of one serial run on an idle 2-core machine, 2026-12-05), started
# first when `make test` spreads whole files over workers (pytest-xdist, --dist loadfile): the longest
# first, so that no long file starts last and runs alone at the end. Order only: every test still runs.
LONG_FILES = {
    "host_tests/ota/test_powercut_flows.py": 62,
    "host_tests/tools/test_bench.py": 49,
    "host_tests/vboard/test_vboard.py": 47,
    "host_tests/test_sim.py": 46,
    "host_tests/ota/test_powercut.py": 31,
    "host_tests/portal/test_hostile.py": 26,
    "host_tests/online/test_plain_twomes_board.py": 25,
    "host_tests/server/test_server_slow_clients.py": 23,
    "host_tests/hawkbit/test_goosebit.py": 22,
    "host_tests/device/test_ota_image.py": 18,
    "host_tests/tools/test_monitor.py": 17,
    "host_tests/server/test_server_fuzz.py": 15,
    "host_tests/device/test_portal_hostile.py": 13,
    "host_tests/device/test_online.py": 13,
    "host_tests/tools/test_install.py": 12,
    "host_tests/online/test_tls_board.py": 11,
    "host_tests/portal/test_browser.py": 10,
    "host_tests/device/test_portal_http.py": 10,
    "host_tests/vboard/test_improv_web.py": 6,
}


def pytest_collection_modifyitems(session, config, items):
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: its order is the one files are handed out in
        items.sort(key=lambda item: -LONG_FILES.get(item.nodeid.split("::", 1)[0], 0))  # stable


def pytest_terminal_summary(terminalreporter):
    counts = {"micropython": {}, "cpython": {}}
    for outcome in ("passed", "failed", "skipped", "error"):
        for rep in terminalreporter.stats.get(outcome, []):
            if getattr(rep, "when", "call") not in ("call", "setup"):
                continue
            if rep.when == "setup" and outcome == "passed":
                continue
            runtime = "micropython" if "[micropython]" in rep.nodeid else "cpython"
            counts[runtime][outcome] = counts[runtime].get(outcome, 0) + 1
    tr = terminalreporter
    tr.section("tests per runtime")
    for runtime, label in (
        ("cpython", "CPython (host tools, server, device logic)"),
        ("micropython", "MicroPython unix port (device logic as .mpy)"),
    ):
        c = counts[runtime]
        tr.write_line(f"{label}: " + ", ".join(f"{c.get(k, 0)} {k}" for k in ("passed", "failed", "skipped")))
