# Deterministic power cuts for the power-cut harness (tools/twtools/powercut.py), in the virtual board's
# hardware process (vhwd.py). Armed only when the board is started with one of these variables
# (otherwise nothing of this is loaded):
#
#   VBOARD_CUT="<boot>:<n>"  in the <boot>-th start of the board since the variable was set (counted in
#                            the state file cut.boots), the <n>-th durable write is cut: it does not
#                            happen (NVS keys, otadata, files) or happens torn (flash program/erase: the
#                            first half only), and the hardware process is SIGKILLed at once - no
#                            finally blocks, no flush, exactly a power cut; the device process sees
#                            the pipe close at its next hardware call and kills itself too (flash
#                            writes and erases are posted, vpart.py: each is still a point of its own,
#                            in the order sent, and the device's other durable writes wait for them).
#   VBOARD_TRACE=1           every durable write is appended to cut.trace as "<boot> <n> <what>"
#                            (the harness's calibration run).
#
# Durable writes, one sequence per boot counted here: flash program/erase (vflash), otadata and each
# key of an NVS commit (vstate/vesp32), and the app's filesystem changes (open for writing, write,
# rename, remove, mkdir, rmdir), which the device's open() and os wrappers (vos.py) announce with a
# hardware call to point(). LED, AP and other bookkeeping files of the simulation are not.
import os

import vstate

_open = open
_boot = 0
_at = -1
_n = 0
_trace = None


def arm():
    """Read the variables; True when cuts or tracing are on (then vstate.cut is set)."""
    global _boot, _at, _trace
    spec = os.getenv("VBOARD_CUT")
    if not spec and not os.getenv("VBOARD_TRACE"):
        return False
    try:
        with _open(vstate.path("cut.boots")) as f:
            _boot = int(f.read() or "0")
    except (OSError, ValueError):
        _boot = 0
    _boot += 1
    with _open(vstate.path("cut.boots"), "w") as f:
        f.write(str(_boot))
    if spec:
        b, n = spec.split(":")
        if int(b) == _boot:
            _at = int(n)
    if os.getenv("VBOARD_TRACE"):
        _trace = vstate.path("cut.trace")
    vstate.cut = point
    return True


def point(what, torn=None):
    """Called before every durable write. At the chosen one: the torn part (if any), then death."""
    global _n
    _n += 1
    if _trace:
        with _open(_trace, "a") as f:
            f.write("%d %d %s\n" % (_boot, _n, what))
    if _n == _at:
        if torn is not None:
            torn()
        die("power cut at durable write %d of boot %d (%s)" % (_n, _boot, what))


def die(why):
    print("\n[vboard: %s]" % why)
    try:
        os.kill(os.getpid(), 9)  # CPython
    except AttributeError:
        os.system("kill -9 $PPID")  # the unix port: the shell's parent is this process
    while True:  # never returns
        pass
