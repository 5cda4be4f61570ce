# Deterministic power cuts for the power-cut harness (tools/twtools/powercut.py). Armed only when the
# board is started with one of these variables (otherwise nothing of this is loaded):
#
#   VBOARD_CUT="<boot>:<n>"  in the <boot>-th start of the board since the variable was set (counted in
#                            the state file cut.boots), the <n>-th durable write is cut: it does not
#                            happen (NVS keys, otadata, files) or happens torn (flash program/erase: the
#                            first half only), and the process is SIGKILLed at once - no finally
#                            blocks, no flush, exactly a power cut.
#   VBOARD_TRACE=1           every durable write is appended to cut.trace as "<boot> <n> <what>"
#                            (the harness's calibration run).
#
# Durable writes: flash program/erase (vflash), otadata and each key of an NVS commit (vstate/vesp32),
# and the app's filesystem changes (open for writing, write, rename, remove, mkdir, rmdir: the open()
# and os wrappers installed by vboot). LED, AP and other bookkeeping files of the simulation are not.
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


# ---- the app's filesystem: open() and os wrappers (installed by vboot when armed) -----------------
def _ours(path):
    return not path.startswith(vstate.state_dir() + "/")


class _Writer:
    def __init__(self, f, path):
        self._f = f
        self._path = path

    def write(self, data):
        point("write %s %d" % (self._path, len(data)))
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __iter__(self):
        return iter(self._f)


def wrapped_open(path, mode="r", *args):
    if isinstance(path, str) and _ours(path):
        for c in "wax+":
            if c in mode:
                point("open %s %s" % (path, mode))  # creating/truncating a file changes the filesystem
                return _Writer(_open(path, mode, *args), path)
    return _open(path, mode, *args)


def install_fs():
    import builtins
    import sys

    import vos

    builtins.open = wrapped_open
    sys.modules["os"] = vos
