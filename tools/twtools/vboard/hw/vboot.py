# The virtual board's "ROM + bootloader + firmware start", run by the MicroPython unix port as the
# device process. On the chip machine, network and esp32 are C modules and the bootloader runs before
# MicroPython: here both are the hardware process (vhwd.py), which the runner started just before this
# one. By now it has run the bootloader's OTA rule and mapped the booted image's frozen app; vproxy
# connects to it, and proxies of its modules become the firmware's built-in machine, network and esp32.
# Then boot.py and main.py run from the board's filesystem (the current directory), as the ESP32 port
# does.
import os
import sys

_hw = os.getenv("VBOARD_HW")
sys.path.insert(0, _hw)
import vproxy  # noqa: E402 - connects to the hardware process

# its handshake: the frozen app of the image the bootloader booted, the power-cut harness's cut point,
# and the hardware modules
_frozen, _cut, sys.modules["machine"], sys.modules["network"], sys.modules["esp32"] = vproxy._q(0)
# a ROMFS build maps the "romfs" partition and mounts it at /rom at start-up (vrom.py: the shipping
# mode; the .mpy-files mode has none). _rom: ["/rom", "/rom/lib"] for sys.path, or None
_rom = os.getenv("VBOARD_ROM")
if _rom:
    import vrom

    _rom = vrom.mount(_rom)
    del sys.modules["vrom"], vrom  # its code is dropped: on the chip this is C
if _cut is not None:  # the power-cut harness: the app's file writes, renames, removes become cut points too
    import vos

    vos.install(_cut)
sys.path.remove(_hw)
del sys.modules["vproxy"]
# an image's frozen app comes first; the port's own .frozen (asyncio...) stands for the rest of the
# MicroPython firmware that is in every image; /rom and /rom/lib come before /lib, as on the ESP32 port
sys.path[:] = ["", _frozen, ".frozen", "lib"] if _frozen else ["", ".frozen", "lib"]
if _rom:
    sys.path[-1:-1] = _rom


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
    except KeyboardInterrupt as e:  # Ctrl-C: the app stops, the REPL takes the console
        sys.print_exception(e)
        return None
    except Exception as e:  # the ESP32 prints the traceback and goes on (boot.py) or stops at the REPL
        sys.print_exception(e)
        return False
    return True


# as the ESP32 port's main.c: boot.py, main.py (not after a soft reset in the raw REPL), the REPL
_run("boot.py")
_ok = os.getenv("VBOARD_SOFT") == "raw" or _run("main.py")  # VBOARD_SOFT: a soft reset (vrepl.py)
sys.path.insert(0, _hw)  # only now: nothing of the REPL's is in the heap while the app runs
import vrepl  # noqa: E402

vrepl.after(_ok)
