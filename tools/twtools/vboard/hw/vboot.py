# The virtual board's "ROM + bootloader + firmware start", run by the MicroPython unix port:
# install the simulated hardware as machine/network/esp32, run the bootloader's OTA rule, then run
# boot.py and main.py from the board's filesystem (the current directory), as the ESP32 port does.
import os
import sys

_hw = os.getenv("VBOARD_HW")
sys.path.insert(0, _hw)
import vflash  # noqa: E402

import vesp32  # noqa: E402
import vmachine  # noqa: E402
import vnetwork  # noqa: E402

_cut = os.getenv("VBOARD_CUT") or os.getenv("VBOARD_TRACE")  # the power-cut harness only
if _cut:
    import vcut

    vcut.arm()
sys.modules["machine"] = vmachine
sys.modules["network"] = vnetwork
sys.modules["esp32"] = vesp32


vflash.image_check = (
    vflash.vimage_check
)  # the bootloader's image check, loaded when an OTA app is a candidate
vesp32.images = True  # esp32.Partition.set_boot checks images as esp_ota_set_boot_partition does
_label = vflash.bootloader()
_frozen = None
if _label and _label.startswith("ota_"):
    import vimage

    _frozen = vimage.load(_label)  # the booted image's frozen app
    del vimage
sys.path.remove(_hw)
# the bootloader's code is not in the app's RAM on the chip: drop it (esp32.Partition reloads it)
del vflash
for _m in ("vflash", "vimage"):
    sys.modules.pop(_m, None)
# an image's frozen app comes first; the port's own .frozen (asyncio...) stands for the rest of the
# MicroPython firmware that is in every image
sys.path[:] = ["", _frozen, ".frozen", "lib"] if _frozen else ["", ".frozen", "lib"]
if _cut:
    sys.path.append(_hw)
    vcut.install_fs()  # the app's file writes, renames, removes become cut points too
    sys.path.remove(_hw)


def _run(name):
    try:
        with open(name) as f:
            code = f.read()
    except OSError:
        return True
    try:
        code = compile(code, name, "exec")  # the source text is not kept while it runs, as on the chip
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
