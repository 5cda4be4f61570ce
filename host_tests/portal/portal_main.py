# The main module of a virtual board that runs ONLY the setup portal and Improv (the app is not part of this
# test): the real twomes modules from /lib, a fake controller (fakectl.py, copied next to this file),
# and a heap watcher printing "@@MEM ..." lines so the host tests can report what the portal costs.
import asyncio
import gc
import os

from fakectl import FakeCtl, start_setup

from twomes import config, hw, identity, store

_low = [0]


async def _watch():
    # live heap at every pause of the portal (a collection first: garbage is not a cost), new lows only
    while True:
        gc.collect()
        free = gc.mem_free()
        if _low[0] == 0 or free < _low[0]:
            _low[0] = free
            print("@@MEM min_free=%d heap=%d" % (free, free + gc.mem_alloc()))
        await asyncio.sleep(0.01)


async def main():
    cfg = config.load()
    board = hw.Board(cfg)
    st = store.Store(board.nvs("twomes"))
    ident = identity.load(st, board.mac(), cfg, os.urandom)
    gc.collect()
    print("@@MEM before_start free=%d" % gc.mem_free())
    ctl = FakeCtl(board, ident, join_ms=cfg.wifi_timeout_s * 1000, cfg=cfg, st=st)
    await start_setup(ctl, cfg)
    gc.collect()
    print("@@MEM started free=%d" % gc.mem_free())
    await _watch()


def run():
    asyncio.run(main())
