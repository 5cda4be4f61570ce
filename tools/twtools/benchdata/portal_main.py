# Bench material, NOT device code: the main of `twomes bench --only portal` on the MicroPython unix port
# (`micropython -X heapsize=N`). PORTAL=device runs the device's portal (twomes.ap.portal), PORTAL=microdot
# the same portal on microdot (mdportal.py), both in front of the device's real setup controller
# (twomes.ap.controller) on a stand-in board (standin.py) whose station joins for real after 300 ms on a
# simulated air.
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

from standin import Board, Ident, St

# ssid -> (password, rssi)
_AIR = {
    "home": ("secret-pass", -52),
    "Caf\u00e9 \u2615 & Co": ("p&%+@#$;\u00e4ssw\u00f6rd =x", -60),
    "<b>x</b>": ("whatever1", -83),
}


class Cfg:
    ap_open = False
    portal_port = int(os.getenv("PORTAL_PORT") or 0)
    wifi_timeout_s = 3


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
    board = Board(_AIR)
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
