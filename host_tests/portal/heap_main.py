# Runs in `micropython -X heapsize=...` (test_portal_heap.HEAP): setup mode's tasks (portal, captive DNS,
# Improv on stdin) with the real controller on a stand-in app (fakectl.py), on a minimal stand-in board
# (this module doubles as the `network` module). Nothing else of the app is loaded, so the figures are
# the onboarding's own cost. Prints "@@MEM ..." lines:
#   before  free heap with setup mode's modules imported, before it starts
#   started free heap with the portal and Improv running
#   min_free the lowest free heap seen (after a collection) while requests are served
#   now      the free heap now and the twomes modules loaded (every 0.25 s)
import asyncio
import gc
import os
import sys
import time

from fakectl import FakeCtl, start_setup

_MAC = b"\x24\x6f\x28\xd3\xad\x48"
# ssid -> (password, rssi); "slow" never answers
_AIR = {
    "home": ("secret-pass", -52),
    "Caf\u00e9 \u2615 & Co": ("p&%+@#$;\u00e4ssw\u00f6rd =x", -60),
    "slow": ("x", -83),
}
STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
AUTH_OPEN = 0
AUTH_WPA2_PSK = 3


class WLAN:
    def __init__(self):
        self.st = STAT_IDLE

    def active(self, v=None):
        return True

    def config(self, *args, **kw):
        return _MAC

    def scan(self):
        return [(s.encode(), _MAC, 1, _AIR[s][1], 3, False) for s in _AIR]

    def connect(self, ssid, key):
        self.ssid, self.key, self.t0, self.st = ssid, key, time.ticks_ms(), STAT_CONNECTING

    def disconnect(self):
        self.st = STAT_IDLE

    def ifconfig(self):
        return ("127.0.0.1", "255.255.255.0", "127.0.0.1", "127.0.0.1")

    def status(self):
        if (
            self.st == STAT_CONNECTING
            and time.ticks_diff(time.ticks_ms(), self.t0) > 300
            and self.ssid != "slow"
        ):
            net = _AIR.get(self.ssid)
            self.st = (
                STAT_NO_AP_FOUND
                if net is None
                else STAT_GOT_IP
                if net[0] == self.key
                else STAT_WRONG_PASSWORD
            )
        return self.st


class Board:
    """The parts of twomes.hw.Board the onboarding uses."""

    def __init__(self):
        self.network = sys.modules[__name__]
        self.sta = WLAN()
        self.ap = WLAN()

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def ticks_add(self, a, b):
        return time.ticks_add(a, b)

    def console_in(self):
        return sys.stdin.buffer

    def console_write(self, data):
        sys.stdout.write(data)

    def kbd_intr(self, ch):
        pass


class Ident:
    name = "TWOMES-D3AD48"
    device_type = "Generic-Test"
    ap_password = "abcdefgh23"


class St:
    """The NVS store's interface (twomes.wifi saves the working credentials in it)."""

    def __init__(self):
        self.d = {}

    def get(self, k):
        return self.d.get(k)

    def put(self, k, v):
        self.d[k] = v

    def delete(self, k):
        self.d.pop(k, None)

    def commit(self):
        pass


class Cfg:
    ap_open = False
    portal_port = int(os.getenv("PORTAL_PORT") or 0)
    dns_port = int(os.getenv("DNS_PORT") or 0)


_low = [0]


async def _watch(ctl):
    # live heap at every pause (garbage collected first: it is not a cost); new lows only, and every
    # 0.25 s the free heap now (what stays allocated between requests: a leak shows there)
    n = 0
    while True:
        ctl.submitted.clear()  # the fake's own record of what it was sent, not the device's
        gc.collect()
        free = gc.mem_free()
        if _low[0] == 0 or free < _low[0]:
            _low[0] = free
            print("@@MEM min_free=%d heap=%d" % (free, free + gc.mem_alloc()))
        n += 1
        if n % 25 == 0:
            mods = ",".join(sorted(k for k in sys.modules if k.startswith("twomes")))
            print("@@MEM now=%d mods=%s" % (free, mods))
        await asyncio.sleep(0.01)


async def main():
    if os.getenv("BASE"):  # the app's base modules too (for measurements)
        from twomes import config, hw, identity, store  # noqa: F401
    board = Board()
    gc.collect()
    print("@@MEM before free=%d" % gc.mem_free())
    ctl = FakeCtl(board, Ident, join_ms=3000, cfg=Cfg, st=St())
    await start_setup(ctl, Cfg)
    gc.collect()
    print("@@MEM started free=%d" % gc.mem_free())
    await _watch(ctl)


def run():
    asyncio.run(main())
