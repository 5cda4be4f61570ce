# The real setup controller (twomes.ap.controller.Controller) on a small stand-in for the app (the
# phase contract: board, cfg, st, ident, state, set_state, report, sleep_s), joining for real on the
# simulated air. FakeCtl adds what the tests look at: the credentials submitted, a join held open, the
# number of rescans. Used by the shared device tests and, copied next to them on the MicroPython unix
# port, by host_tests/portal/portal_main.py (on a virtual board) and heap_main.py (the portal heap
# test), so it imports nothing but twomes modules.
import asyncio

from twomes import store
from twomes.ap.controller import Controller


class FakeApp:
    """What a phase gets from the app, and nothing else."""

    def __init__(self, board, ident, cfg=None, st=None, wifi_timeout_s=1):
        self.board = board
        self.ident = ident
        self.cfg = cfg
        self.st = st if st is not None else store.Store(board.nvs("twomes"))
        self.state = "portal"
        self.message = ""
        self.reports = {}
        self.stop = False  # a test sets it: sleep_s raises Restart, as the app's does
        self.wifi_timeout_s = wifi_timeout_s

    def set_state(self, state, message=""):
        self.state = state
        self.message = message

    def report(self, key, value):
        self.reports[key] = value

    async def sleep_s(self, seconds):
        await asyncio.sleep(seconds)
        if self.stop:
            raise RuntimeError("restart")


class FakeCtl(Controller):
    def __init__(self, board, ident, join_ms=600, nets=None, cfg=None, st=None, app=None, streams=None):
        Controller.__init__(self, app or FakeApp(board, ident, cfg, st), streams)
        self.join_ms = join_ms
        self.submitted = []
        self.rescans = 0
        self.hold = False  # a test sets it to keep a join in progress until it clears it
        if nets is None:
            from twomes.ap import creds

            self.nets, self.more = creds.scan(board)
        else:
            self.nets = nets

    @property
    def saved(self):
        from twomes import wifi

        return wifi.saved(self.app.st)

    async def _attempt(self, ssid, password, name):
        self.submitted.append((ssid, password, name))
        return await Controller._attempt(self, ssid, password, name)

    async def _join(self, ssid, password):
        from twomes import wifi

        while self.hold:
            await asyncio.sleep(0.01)
        return await wifi.join(self.app.board, ssid, password, self.join_ms)

    async def rescan(self, force=False):
        if await Controller.rescan(self, force):
            self.rescans += 1
            return True
        return False


async def start_setup(ctl, cfg):
    """Setup mode's tasks as the controller's run() starts them (portal, DNS, the console with Improv,
    each supervised), without its loop: the portal stays up after a join (boards that only serve)."""
    from twomes.ap import dns
    from twomes.ap.controller import supervise
    from twomes.ap.portal import Portal

    app = ctl.app
    p = Portal(app.board, app.ident, cfg, ctl)
    await p.start()
    p.tasks = [
        asyncio.create_task(supervise("portal", p.serve)),
        asyncio.create_task(supervise("dns", dns.serve, p.ip, cfg.dns_port or 53)),
        asyncio.create_task(supervise("improv", ctl.console)),
    ]
    return p
