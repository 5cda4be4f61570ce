# The app controller as the portal and Improv see it (status/submit/networks/rescan/info), joining for
# real on the simulated air. Used by the shared device tests and, copied onto a virtual board's
# filesystem, by host_tests/portal/portal_main.py (so it imports nothing but twomes.wifi and twomes.creds).
import asyncio

from twomes import wifi

# twomes.creds is imported where it is used, as the app's controller does (the portal drops it between
# requests, so a module-level reference would keep a second copy in the heap)


class FakeCtl:
    """The app controller's API as the portal and Improv use it; joins for real on the simulated air."""

    def __init__(self, board, ident, join_ms=600, nets=None):
        self.board = board
        self.ident = ident
        self.join_ms = join_ms
        self.state = "portal"
        self.wifi = None
        self.ssid = None
        self.message = "waiting for Wi-Fi settings"
        from twomes import creds

        self.nets = creds.scan(board) if nets is None else nets  # [(ssid, rssi, secured)], as the app's
        self.submitted = []
        self.rescans = 0
        self.saved = None
        self.hold = False  # a test sets it to keep a join in progress until it clears it

    def status(self):
        return {"state": self.state, "wifi": self.wifi, "ssid": self.ssid, "message": self.message}

    async def submit(self, ssid, password, name=None):
        from twomes import creds

        bad = creds.check_credentials(ssid, password)
        if bad:
            raise ValueError(bad)
        self.submitted.append((ssid, password, name))
        self.state = "joining"
        self.ssid = ssid
        self.message = "testing the network"
        while self.hold:
            await asyncio.sleep(0.01)
        r = await wifi.join(self.board, ssid, password, self.join_ms)
        self.wifi = r
        self.message = wifi.REASONS[r]
        if r == wifi.JOINED:
            self.state = "activating"
            self.saved = (ssid, password, name)
        else:
            self.state = "portal"
        return r

    async def rescan(self):
        from twomes import creds

        self.rescans += 1
        self.nets = creds.scan(self.board)

    def info(self):
        return {
            "name": self.ident.name,
            "device_type": self.ident.device_type,
            "version": "1.0.0",
            "state": self.state,
        }
