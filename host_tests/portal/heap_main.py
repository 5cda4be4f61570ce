# Runs in `micropython -X heapsize=64K`: the portal (+ captive DNS + Improv on stdin) with the app's
# base modules (config, store, identity, hw, log, wifi) and a fake controller, on minimal stand-ins for
# machine/network/esp32. The virtual board's simulated hardware is left out on purpose: it costs about
# 25 KB of heap that a real ESP32 does not spend. Prints "@@MEM ..." lines for the host test.
import asyncio
import gc
import os
import sys
import time

from fakectl import FakeCtl

from twomes import config, hw, identity, log, store, wifi  # noqa: F401  (the app has them all loaded)

_MAC = b"\x24\x6f\x28\xd3\xad\x48"
# ssid -> (password, rssi); "slow" never answers
_AIR = {
    "home": ("secret-pass", -52),
    "Caf\u00e9 \u2615 & Co": ("p&%+@#$;\u00e4ssw\u00f6rd =x", -60),
    "slow": ("x", -83),
}


# this module stands in for `machine` (Pin) and `network` (WLAN and its constants)
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
    """Also the Pin: the Board only calls value() on those."""

    IN = OUT = PULL_UP = 0

    def __init__(self, *args):
        self.st = STAT_IDLE

    def value(self, v=None):
        return 1

    def active(self, v=None):
        return True

    def config(self, *args, **kw):
        return _MAC

    def ifconfig(self):
        return ("127.0.0.1", "255.255.255.0", "127.0.0.1", "127.0.0.1")

    def scan(self):
        return [(s.encode(), _MAC, 1, _AIR[s][1], 3, False) for s in _AIR]

    def connect(self, ssid, key):
        self.ssid, self.key, self.t0, self.st = ssid, key, time.ticks_ms(), STAT_CONNECTING

    def disconnect(self):
        self.st = STAT_IDLE

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


Pin = WLAN


_low = [0]


async def _watch():
    # live heap at every pause (garbage collected first: it is not a cost); new lows only
    while True:
        gc.collect()
        free = gc.mem_free()
        if _low[0] == 0 or free < _low[0]:
            _low[0] = free
            print("@@MEM min_free=%d heap=%d" % (free, free + gc.mem_alloc()))
        await asyncio.sleep(0.01)


async def main():
    cfg = config.Config(
        {"portal_port": int(os.getenv("PORTAL_PORT")), "dns_port": int(os.getenv("DNS_PORT"))}
    )
    me = sys.modules[__name__]
    board = hw.Board(cfg, me, me, me)
    ident = identity.Identity(
        identity.device_name(cfg.name_prefix, board.mac()), cfg.device_type, "1" * 16, "s" * 24
    )
    ctl = FakeCtl(board, ident, join_ms=3000)
    gc.collect()
    print("@@MEM base free=%d" % gc.mem_free())
    from twomes.improv import Improv
    from twomes.portal import Portal

    portal = Portal(board, ident, cfg, ctl)
    await portal.start()
    imp = Improv(board, ident, ctl, "1.0.0")
    gc.collect()
    print("@@MEM started free=%d" % gc.mem_free())
    asyncio.create_task(_watch())
    await imp.run()
    await asyncio.sleep(3600)


def run():
    asyncio.run(main())
