# Bench material, NOT device code: the main of `twomes bench --only portal` on the MicroPython unix port
# (`micropython -X heapsize=N`). PORTAL=device runs the device's portal (twomes.ap.portal), PORTAL=microdot
# the same portal on microdot (mdportal.py), both in front of the device's real setup controller
# (twomes.ap.controller) on a stand-in board whose station joins for real after 300 ms on a simulated air.
# Nothing else runs (no captive DNS, no Improv), so the heap figures are the portal's and the
# controller's. Lines for the bench:
#   @@BASE live=N      the stand-in board is up, nothing of twomes imported yet
#   @@CTL live=N       the controller is up with its scan (twomes.ap.controller imports the portal
#                      module: with PORTAL=microdot the bench replaces that module by a stub, so this
#                      is the controller's own share, the same in both variants)
#   @@READY live=N     the portal listens (N: live heap after a collection)
#   @@LIVE live=N      after an "m" line on stdin: the live heap after a collection
import asyncio
import gc
import os
import sys
import time

_MAC = b"\x24\x6f\x28\xd3\xad\x48"
# ssid -> (password, rssi)
_AIR = {
    "home": ("secret-pass", -52),
    "Caf\u00e9 \u2615 & Co": ("p&%+@#$;\u00e4ssw\u00f6rd =x", -60),
    "<b>x</b>": ("whatever1", -83),
}
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
        self.ssid = self.key = None
        self.t0 = 0

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

    def isconnected(self):
        return self.status() == STAT_GOT_IP

    def ifconfig(self):
        return ("127.0.0.1", "255.255.255.0", "127.0.0.1", "127.0.0.1")

    def status(self):
        if self.st == STAT_CONNECTING and time.ticks_diff(time.ticks_ms(), self.t0) > 300:
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


class Ident:
    name = "TWOMES-D3AD48"
    device_type = "Generic-Test"
    ap_password = "abcdefgh23"


class Cfg:
    ap_open = False
    portal_port = int(os.getenv("PORTAL_PORT") or 0)
    wifi_timeout_s = 3


class St:
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


class App:
    """What the setup controller gets from the app (the phase contract)."""

    def __init__(self, board):
        self.board = board
        self.ident = Ident
        self.cfg = Cfg
        self.st = St()
        self.state = "portal"

    def set_state(self, state, message=""):
        self.state = state

    def report(self, key, value):
        pass

    async def sleep_s(self, seconds):
        await asyncio.sleep(seconds)


async def _mem():
    reader = asyncio.StreamReader(sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        gc.collect()
        print("@@LIVE live=%d" % gc.mem_alloc())


async def main():
    board = Board()
    gc.collect()
    print("@@BASE live=%d" % gc.mem_alloc())
    from twomes.ap.controller import Controller

    ctl = Controller(App(board))
    await ctl.rescan(True)
    port = Cfg.portal_port
    gc.collect()
    print("@@CTL live=%d" % gc.mem_alloc())
    if os.getenv("PORTAL") == "microdot":
        import mdportal

        origin = "http://127.0.0.1:%d" % port
        app = mdportal.make_app(ctl, Ident, origin, ("127.0.0.1:%d" % port,))
        task = asyncio.create_task(app.start_server("127.0.0.1", port))
        await asyncio.sleep(0.05)  # the listening socket is made by the server task
    else:
        from twomes.ap.portal import Portal

        p = Portal(board, Ident, Cfg, ctl)
        await p.start()
        task = asyncio.create_task(p.serve())
    gc.collect()
    print("@@READY live=%d" % gc.mem_alloc())
    await _mem()
    task.cancel()


def run():
    asyncio.run(main())
