# The virtual board's "ROM + bootloader + firmware start", run by the MicroPython unix port:
# install the simulated hardware as machine/network/esp32, run the bootloader's OTA rule, then run
# boot.py and main.py from the board's filesystem (the current directory), as the ESP32 port does.
import os
import sys

_hw = os.getenv("VBOARD_HW")
sys.path.insert(0, _hw)
import vesp32  # noqa: E402
import vmachine  # noqa: E402
import vnetwork  # noqa: E402
import vstate  # noqa: E402, F401  (imported first: the others need it configured)

sys.path.remove(_hw)
sys.modules["machine"] = vmachine
sys.modules["network"] = vnetwork
sys.modules["esp32"] = vesp32

try:
    import vimage  # firmware-image support (frozen app of the booted partition), when present

    vesp32.image_check = vimage.check
except ImportError:
    vimage = None

_label = vesp32.bootloader()
_frozen = vimage.load(_label) if vimage else None
sys.path[:] = ["", _frozen or ".frozen", "lib"]


def _run(name):
    try:
        with open(name) as f:
            code = f.read()
    except OSError:
        return True
    try:
        exec(code, {"__name__": "__main__", "__file__": name})
    except SystemExit:
        raise
    except Exception as e:  # the ESP32 prints the traceback and goes on (boot.py) or stops at the REPL
        sys.print_exception(e)
        return False
    return True


_run("boot.py")
if not _run("main.py"):
    sys.exit(1)  # on the chip: an idle REPL; the runner reports it
