# `os` for the app on a board armed for power cuts (vcut): the real module with every filesystem change
# announced to vcut first, so a cut can fall between any two of them.
import os as _os
from os import *  # noqa: F403

import vcut


def rename(a, b):
    vcut.point("rename %s %s" % (a, b))
    _os.rename(a, b)


def remove(p):
    vcut.point("remove " + p)
    _os.remove(p)


unlink = remove


def mkdir(p, *a):
    vcut.point("mkdir " + p)
    _os.mkdir(p, *a)


def rmdir(p):
    vcut.point("rmdir " + p)
    _os.rmdir(p)
