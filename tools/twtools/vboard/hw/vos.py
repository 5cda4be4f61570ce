# `os` and `open` for the app on a board armed for power cuts (vfw installs them when the hardware
# process says so): the real ones, with every filesystem change announced first to the hardware
# process (vcut.point there, over vproxy), which counts the durable writes of the whole board - flash,
# otadata, NVS keys and these - and cuts the power at the chosen one. Calls that change nothing (mkdir
# of an existing directory, remove of a missing file) are not cut points.
import os as _os
from os import *  # noqa: F403

_open = open
point = None  # the hardware process's vcut.point (set by install)


def _exists(p):
    try:
        _os.stat(p)
        return True
    except OSError:
        return False


def rename(a, b):
    if _exists(a):
        point("rename %s %s" % (a, b))
    _os.rename(a, b)


def remove(p):
    if _exists(p):
        point("remove " + p)
    _os.remove(p)


unlink = remove


def mkdir(p, *a):
    if not _exists(p):
        point("mkdir " + p)
    _os.mkdir(p, *a)


def rmdir(p):
    if _exists(p):
        point("rmdir " + p)
    _os.rmdir(p)


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
    if isinstance(path, str):
        for c in "wax+":
            if c in mode:
                point("open %s %s" % (path, mode))  # creating/truncating a file changes the filesystem
                return _Writer(_open(path, mode, *args), path)
    return _open(path, mode, *args)


def install(cut_point):
    """The app's open() and os from now on: file writes, renames, removes become cut points."""
    global point
    import builtins
    import sys

    point = cut_point
    builtins.open = wrapped_open
    sys.modules["os"] = sys.modules["vos"]
