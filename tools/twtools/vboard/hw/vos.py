# `os` for the app on a board armed for power cuts (vcut): the real module with every filesystem change
# announced to vcut first, so a cut can fall between any two of them. Calls that change nothing (mkdir
# of an existing directory, remove of a missing file) are not cut points.
import os as _os
from os import *  # noqa: F403

import vcut


def _exists(p):
    try:
        _os.stat(p)
        return True
    except OSError:
        return False


def rename(a, b):
    if _exists(a):
        vcut.point("rename %s %s" % (a, b))
    _os.rename(a, b)


def remove(p):
    if _exists(p):
        vcut.point("remove " + p)
    _os.remove(p)


unlink = remove


def mkdir(p, *a):
    if not _exists(p):
        vcut.point("mkdir " + p)
    _os.mkdir(p, *a)


def rmdir(p):
    if _exists(p):
        vcut.point("rmdir " + p)
    _os.rmdir(p)
