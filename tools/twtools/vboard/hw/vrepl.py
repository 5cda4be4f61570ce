# The virtual board's REPL after the app (vfw.py imports this only then: nothing of it is in the
# heap while the app runs), as the ESP32 port's main.c starts the MicroPython REPL after main.py.
#
# The REPL is the unix port's own, MicroPython's shared pyexec code: friendly REPL, paste mode (Ctrl-E),
# raw REPL (Ctrl-A) and its raw-paste mode, as mpremote and ampy use them on a chip. The unix port
# starts it after the script when MICROPYINSPECT is set at that moment, so the firmware asks for it
# only when the REPL is due (not after machine.reset(), which ends the process with its reboot code).
# Ctrl-D there ends the process; the runner (vboard/console.py) starts it again as a soft reset, with
# VBOARD_SOFT set to the REPL it left ("raw" or "friendly"), and Ctrl-C reaches the app as on the chip:
# the runner turns it into SIGINT while the port has its Ctrl-C handler on (micropython.kbd_intr(3)).
import os
import sys


def after(ok):
    """After boot.py and main.py: `ok` False when main.py failed, None after Ctrl-C."""
    if ok is None or os.getenv("VBOARD_TTY"):
        _root()
        # the unix port starts its REPL when vboot.py ends (after vfw.main returns)
        os.putenv("MICROPYINSPECT", "1")
    elif not ok:
        sys.exit(1)  # a console without a keyboard (pipes): the runner reports it


def _root():
    # On the chip "/" is the board's filesystem, and tools use it so (ampy ls /, mpremote cp :/x): the
    # board's directory becomes "/" for the REPL, the computer's root stays reachable as /.host for
    # what sys.path still names there (an image's frozen app).
    fs = os.getcwd()
    os.umount("/")
    os.mount(os.VfsPosix(fs), "/")
    os.mount(os.VfsPosix("/"), "/.host")
    os.chdir("/")
    sys.path[:] = ["/.host" + p if p.startswith("/") else p for p in sys.path]
