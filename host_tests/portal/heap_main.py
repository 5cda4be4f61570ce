# Runs in `micropython -X heapsize=...` (test_portal_heap.HEAP): setup mode's tasks (portal, captive DNS,
# Improv on stdin) with the real controller on a stand-in app (fakectl.py), on a minimal stand-in board
# (tools/twtools/benchdata/standin.py, shared with the portal bench). Nothing else of the app is loaded,
# so the figures are the onboarding's own cost. Prints "@@MEM ..." lines:
#   before  free heap with setup mode's modules imported, before it starts
#   started free heap with the portal and Improv running
#   min_free the lowest free heap seen (after a collection) while requests are served
#   now      the free heap now and the twomes modules loaded (every 0.25 s)
import asyncio
import gc
import os
import sys

from fakectl import FakeCtl, start_setup
from standin import Board, Ident, St

# ssid -> (password, rssi); "slow" never answers
_AIR = {
    "home": ("secret-pass", -52),
    "Caf\u00e9 \u2615 & Co": ("p&%+@#$;\u00e4ssw\u00f6rd =x", -60),
    "slow": (None, -83),
}


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
    board = Board(_AIR)
    gc.collect()
    print("@@MEM before free=%d" % gc.mem_free())
    ctl = FakeCtl(board, Ident, join_ms=3000, cfg=Cfg, st=St())
    await start_setup(ctl, Cfg)
    gc.collect()
    print("@@MEM started free=%d" % gc.mem_free())
    await _watch(ctl)


def run():
    asyncio.run(main())
