# Where a virtual board keeps its persistent state (one directory per board) and how it writes it:
# every file is replaced atomically (write a temp file, rename), so killing the process at any moment -
# the simulated power cut - leaves either the old or the new content, never half of it.
import json
import os

_dir = None
_board = None
# Set by vcut when the board is armed for power cuts: called before every durable write (the flash
# files, otadata, each NVS key of a commit); None otherwise.
cut = None


def configure(state_dir):
    global _dir, _board
    _dir = state_dir
    _board = None


def state_dir():
    global _dir
    if _dir is None:
        _dir = os.getenv("VBOARD")
        if not _dir:
            raise OSError("VBOARD (the virtual board's state directory) is not set")
    return _dir


def path(name):
    return state_dir() + "/" + name


def exists(name):
    try:
        os.stat(path(name))
        return True
    except OSError:
        return False


def read_json(name, default=None):
    try:
        with open(path(name)) as f:
            return json.loads(f.read())
    except OSError:
        return default
    except ValueError:
        return default


def write_json(name, value):
    write_bytes(name, json.dumps(value).encode())


def read_text(name, default=""):
    try:
        with open(path(name)) as f:
            return f.read()
    except OSError:
        return default


def write_bytes(name, data):
    if cut is not None and name == "otadata.json":
        cut(name)
    tmp = path(name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path(name))


def board():
    """board.json: mac, ap_ip, air file, button/LED pins, partition table, rollback flag."""
    global _board
    if _board is None:
        _board = read_json("board.json", None)
        if _board is None:
            raise OSError("no board.json in " + state_dir())
    return _board


def mac():
    text = board()["mac"]
    return bytes(int(p, 16) for p in text.split(":"))
