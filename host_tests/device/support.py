# Helpers for the device tests that run on BOTH CPython and the MicroPython unix port.
# Only the subset of Python both runtimes share (no pytest fixtures, no pathlib, no f-strings needed).
import json
import os

import vstate

_n = [0]


def tmpdir(tag="t"):
    base = os.getenv("TW_TMP") or "/tmp"
    _n[0] += 1
    d = "%s/%s-%s-%d" % (base, tag, "".join("%02x" % b for b in os.urandom(4)), _n[0])
    os.mkdir(d)
    return d


def new_board(mac="24:6F:28:D3:AD:48", air=None, partitions=None, rollback=True):
    """A fresh simulated board state directory, made current for the vmachine/vnetwork/vesp32 fakes."""
    d = tmpdir("board")
    board = {
        "mac": mac,
        "ap_ip": "127.0.0.1",
        "air": "air.json",
        "button_pin": 0,
        "led_pin": 2,
        "rollback": rollback,
    }
    if partitions:
        board["partitions"] = partitions
    with open(d + "/board.json", "w") as f:
        f.write(json.dumps(board))
    with open(d + "/air.json", "w") as f:
        f.write(json.dumps(air or []))
    vstate.configure(d)
    import vesp32
    import vnetwork

    vesp32._pending.clear()
    vnetwork.WLAN._instances.clear()
    return d


def power_cycle():
    """What a power cut does to the fakes: uncommitted NVS writes and live objects are gone."""
    import vesp32
    import vnetwork

    vesp32.nvs_drop_uncommitted()
    vnetwork.WLAN._instances.clear()


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


def run(coro):
    import asyncio

    return asyncio.run(coro)


class Clock:
    """A clock whose time only moves when told to (for state-machine tests)."""

    def __init__(self):
        self.t = 0

    def ticks_ms(self):
        return self.t

    def ticks_diff(self, a, b):
        return a - b
