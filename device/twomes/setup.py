# AP mode (setup): the controller the captive portal, the app API and Improv talk to, and the loop that
# keeps the portal open until Wi-Fi credentials work. Loaded only while the access point is up.
import asyncio
import gc

from micropython import const

from twomes import VERSION, unload, wifi
from twomes.log import log

PORTAL = "portal"
JOINING = "joining"
_GRACE_MS = const(4000)  # after a portal join: time for the phone to see the result page
_MAGIC = b"IMPROV"
_HEAD_MAX = const(1536)  # the portal's request head bound (twomes.portal_up); phones send ~0.4-1 KB


class Setup:
    def __init__(self, app):
        self.app = app
        self._busy = False
        self.nets = []  # the last scan: [(ssid, rssi, secured)] (the portal and Improv read it)
        self.improv = None  # loaded when an Improv client speaks on the serial console
        self.interrupted = False  # Ctrl-C on the console

    def status(self):
        app = self.app
        return {
            "state": app.state,
            "wifi": app.wifi_result,
            "ssid": app.wifi_ssid,
            "message": app.message,
        }

    def info(self):
        app = self.app
        return {
            "name": app.ident.name,
            "device_type": app.ident.device_type,
            "version": VERSION,
            "state": app.state,
        }

    # twomes.creds is imported where it is used, not kept: the portal drops it after each request
    async def rescan(self):
        from twomes import creds

        try:
            self.nets = creds.scan(self.app.board)
        except OSError as e:
            log("wifi", "scan failed: %s" % e)

    async def submit(self, ssid, password, name=None):
        from twomes import creds

        app = self.app
        problem = creds.check_credentials(ssid, password)
        creds = None
        unload("creds")  # not in the heap during the join (Improv makes no requests that drop it)
        if problem:
            raise ValueError(problem)
        if self._busy:
            raise ValueError("busy: already testing a network")
        self._busy = True
        prev = app.state
        try:
            app.set_state(JOINING, "testing %s" % ssid)
            app.wifi_ssid = ssid
            app.wifi_result = None
            result = await wifi.join(app.board, ssid, password, app.cfg.wifi_timeout_s * 1000)
            app.wifi_result = result
            log("wifi", "%s: %s" % (ssid, wifi.REASONS[result]))
            if result == wifi.JOINED:
                wifi.save(app.st, ssid, password)
                log("wifi", "credentials for %s stored" % ssid)
                if name:
                    log("wifi", "device name from setup: %s" % name[:32])
                app._joined = (ssid, password)
                app.message = "connected to %s" % ssid
            else:
                app.state = prev
                app.message = wifi.REASONS[result]
            return result
        finally:
            self._busy = False

    async def run(self, saved):
        """AP + captive portal (+ Improv on serial) until credentials work. With saved credentials the
        saved network is retried now and then, and the portal closes when nobody uses it."""
        # the portal's request buffer before anything else of the portal: later, after the boot's
        # modules came and went, the heap may have no hole that size left
        buf = bytearray(_HEAD_MAX)
        from twomes.portal import Portal

        app = self.app
        app._joined = None
        await self.rescan()  # before the AP starts: a scan disturbs clients of the AP
        gc.collect()
        portal = Portal(app.board, app.ident, app.cfg, self, buf)
        buf = None
        await portal.start()
        console_task = asyncio.create_task(self.console())
        app.set_state(PORTAL, "waiting for Wi-Fi settings")
        if not app.cfg.ap_open:  # the setup AP's own password (printed like a label), not an owner's secret
            log("setup", "access point password %s" % app.ident.ap_password)
        retry_ms = app.cfg.portal_retry_s * 1000
        last_try = app.board.ticks_ms()
        try:
            while True:
                await app.sleep_s(0.25)
                if self.interrupted or (self.improv is not None and self.improv.interrupted):
                    raise KeyboardInterrupt()  # Ctrl-C on the console: stop the app, REPL
                if app._joined:
                    await asyncio.sleep(_GRACE_MS / 1000)
                    return
                if not portal.serving():
                    log("portal", "web server stopped (out of memory): restarting the device into setup")
                    raise app.Restart()
                if saved is None or self._busy:
                    continue
                now = app.board.ticks_ms()
                if app.board.ticks_diff(now, last_try) >= retry_ms:
                    last_try = now
                    if await self.submit(saved[0], saved[1]) == wifi.JOINED:
                        return
                    app.set_state(PORTAL, "waiting for Wi-Fi settings")
                if portal.idle_ms() >= app.cfg.portal_idle_s * 1000:
                    log(
                        "portal",
                        "no visitors for %d s: closing, trying %s again" % (app.cfg.portal_idle_s, saved[0]),
                    )
                    return
        finally:
            console_task.cancel()
            await portal.stop()

    async def console(self):
        """Listen on the serial console for Improv Wi-Fi. The Improv code is loaded only when a client
        really sends a frame; until then a few bytes of state watch for its magic. 0x03 is data inside
        frames, so Ctrl-C is off while listening; a lone Ctrl-C between frames stops the app (REPL)."""
        board = self.app.board
        board.kbd_intr(-1)
        handed_over = False
        try:
            reader = asyncio.StreamReader(board.console_in())
            n = 0
            while n < 6:
                b = await reader.read(1)
                if not b:
                    return
                if b == b"\x03" and n == 0:
                    self.interrupted = True
                    return
                n = n + 1 if b[0] == _MAGIC[n] else (1 if b == b"I" else 0)
            from twomes.improv import Improv

            self.improv = Improv(board, self.app.ident, self, VERSION)
            self.improv.feed(_MAGIC)
            handed_over = True
            await self.improv.run(reader)  # restores Ctrl-C when it ends
        finally:
            if not handed_over:
                board.kbd_intr(3)


async def run(app, saved):
    """The setup phase: "joined" when credentials were tested and stored, else "retry"."""
    app._joined = None
    await Setup(app).run(saved)
    return "joined" if app._joined else "retry"
