# The virtual board's firmware start, after vmap mapped this code's ROM: what the ESP32 port's main.c
# does in C from flash. On the chip machine, network and esp32 are C modules and the bootloader runs
# before MicroPython: here both are the hardware process (vhwd.py), which the runner started just before
# this one. By now it has run the bootloader's OTA rule and mapped the booted image's frozen app; vproxy
# connects to it, and proxies of its modules become the firmware's built-in machine, network and esp32.
# Then boot.py and main.py run from the board's filesystem (the current directory), as the ESP32 port
# does. This module and those it imports run in place from the firmware's ROM (vmap.py): their bytecode,
# constants and names' text are not in the heap; what is, is their module, function and class objects.
import gc
import os
import sys

import vfs

fw = None  # set by vmap: the mapping of this code's ROM (mounted at /.fw until boot.py)
rom = 0  # set by vmap: 1 when the "romfs" partition is mounted at /rom


def load(name):
    """A module of this ROM, imported in place (the ROM is mounted at /.fw for the import only, so the
    app never sees it)."""
    vfs.mount(vfs.VfsRom(fw), "/.fw")
    sys.path.insert(0, "/.fw")
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)
        vfs.umount("/.fw")


def main():
    import vproxy  # connects to the hardware process

    # its handshake: the frozen app of the image the bootloader booted, the power-cut harness's cut
    # point, and the hardware modules
    frozen, cut, sys.modules["machine"], sys.modules["network"], sys.modules["esp32"] = vproxy._q(0)
    if cut is not None:  # the power-cut harness: the app's writes, renames, removes become cut points too
        import vos

        vos.install(cut)
    # nothing of the simulation is left in sys.modules, and its ROM is not mounted while the app runs
    # (vproxy loads vpart, esp32.Partition's proxy, at the first partition: load(); it stays in
    # sys.modules from then on, as it did when it came from a file, and otaboot drops what the boot
    # loaded)
    del sys.modules["vproxy"], sys.modules["vfw"]
    vfs.umount("/.fw")
    # an image's frozen app comes first; the port's own .frozen (asyncio...) stands for the rest of the
    # MicroPython firmware that is in every image; /rom and /rom/lib come before /lib, as on the ESP32 port
    p = ["", frozen, ".frozen", "lib"] if frozen else ["", ".frozen", "lib"]
    if rom:
        p[-1:-1] = ["/rom", "/rom/lib"]
    sys.path[:] = p
    # the app starts on a heap as compact as the chip's at boot.py (whose start-up is C): the start-up's
    # garbage (vmap read the environment block and copied the ROMs in pieces) is collected now, before
    # long-lived objects of the app can land above it and split the free heap
    p = frozen = None
    gc.collect()
    # as the ESP32 port's main.c: boot.py, main.py (not after a soft reset in the raw REPL), the REPL
    _run("boot.py")
    ok = os.getenv("VBOARD_SOFT") == "raw" or _run("main.py")  # VBOARD_SOFT: a soft reset (vrepl.py)
    # the REPL's code comes from the ROM only now: nothing of it is in the heap while the app runs
    load("vrepl").after(ok)


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
