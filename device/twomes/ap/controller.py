# Setup mode (access point): the controller the captive portal, the app API and Improv talk to, and
# run(app, saved), the phase itself. It keeps the AP open until Wi-Fi credentials work and returns an
# outcome: "joined" (tested and stored: the app restarts to go online from a clean heap), "retry" (try
# the saved network again: nobody used the portal for a while) or "restart" (the portal cannot go on).
# A lone Ctrl-C on the console raises KeyboardInterrupt.
#
# Every task of setup mode (web server, DNS, Improv, the credential test) runs under supervise(): a
# failure (a MemoryError under load, a bug) is logged and the task started again, never silently gone.
# What the app gives a phase (app.board, cfg, st, ident, state, set_state, report, sleep_s) is all this
# module uses of it: it never sets the app's fields and never imports twomes.app.
import asyncio

from micropython import const

from twomes import VERSION, hw, unload, wifi
from twomes.ap import creds, dns
from twomes.ap.creds import shown
from twomes.ap.portal import Portal
from twomes.log import log

PORTAL = "portal"
JOINING = "joining"
_GRACE_MS = const(4000)  # after a join: time for the phone (or the Improv tool) to see the result
_RESCAN_MIN_MS = const(10000)  # a scan costs the chip about two seconds and disturbs the AP's clients
_PAUSE_MS = const(500)  # before a failed task is started again (more after repeated failures)
_NOISY_MS = const(100)  # silence before a 0x03 is Ctrl-C after the console failed (improv_serial's too)


async def supervise(name, fn, *args, sleep=None):
    """Run `fn(*args)` until it returns (or is cancelled); an exception is logged and `fn` started
    again after a pause (`sleep(seconds)`: asyncio.sleep unless given). Returns the number of restarts."""
    fails = 0
    while True:
        try:
            await fn(*args)
            return fails
        except Exception as e:  # noqa: BLE001 - task boundary: logged, restarted
            fails += 1
            try:
                log(name, "task failed (%s): started again (%d)" % (type(e).__name__, fails))
            except MemoryError:
                pass
            e = None
        try:
            await (sleep or asyncio.sleep)(_PAUSE_MS / 1000 if fails < 10 else 5)
        except MemoryError:
            pass


class Controller:
    def __init__(self, app, streams=None):
        self.app = app
        self._streams = streams  # the portal's connection streams (tests: in-process, no socket)
        self.nets = b""  # the last scan, as shown (creds.scan; creds.listed reads it)
        self.more = 0  # networks seen beyond those
        self.testing = None  # the SSID under test
        self.result = None  # (ssid, code, text) of the last test
        self.joined = False  # credentials tested and stored
        self.interrupted = False  # a lone Ctrl-C on the console
        self.wifi_ssid = self.wifi_result = None
        self.message = ""
        self._job = None
        self._rescan_at = None
        self._ended = None  # ticks when the last credential test ended (the saved network waits after it)
        self._unsure = False  # the console task failed: bytes of a frame may have been lost

    # ---- what the portal, the app API and Improv ask ----------------------------------------------
    def status(self):
        r = self.result or (None, None, None)
        return {
            "state": self.app.state,
            "wifi": self.wifi_result,
            "ssid": self.wifi_ssid,
            "message": self.message,
            "busy": self.testing is not None,
            "result_ssid": r[0],
            "result": r[1],
            "result_text": r[2],
        }

    def info(self):
        ident = self.app.ident
        return {
            "name": ident.name,
            "device_type": ident.device_type,
            "version": VERSION,
            "state": self.app.state,
        }

    async def rescan(self, force=False):
        """A new scan list (at most every _RESCAN_MIN_MS unless `force`; True if it scanned); the old
        list stays on failure."""
        b = self.app.board
        now = b.ticks_ms()
        if not force and self._rescan_at is not None and b.ticks_diff(now, self._rescan_at) < _RESCAN_MIN_MS:
            return False
        self._rescan_at = now
        try:
            self.nets, self.more = creds.scan(b)
        except OSError as e:
            log("wifi", "scan failed: %s" % e)
        return True

    def start(self, ssid, password, name=None):
        """Start a credential test in its own task (the form and the app API); ValueError(reason) when
        the credentials are refused or a test runs already."""
        self._claim(ssid, password, name)
        self._job = asyncio.create_task(self._attempt(ssid, password, name))

    async def test(self, ssid, password, name=None):
        """Test credentials and wait for the outcome (Improv, the saved network): a wifi result code;
        ValueError(reason) when refused."""
        self._claim(ssid, password, name)
        return await self._attempt(ssid, password, name)

    def _claim(self, ssid, password, name):
        bad = creds.check(ssid, password, name)
        if bad is None and self.testing is not None:
            bad = "busy: already testing a network"
        if bad is not None:
            raise ValueError(bad)
        self.testing = ssid
        self.result = None

    async def _join(self, ssid, password):
        """The station's join (the seam the host tests hold or count)."""
        return await wifi.join(self.app.board, ssid, password, self.app.cfg.wifi_timeout_s * 1000)

    def _report(self, ssid, result, message):
        self.wifi_ssid = ssid
        self.wifi_result = result
        self.message = message
        app = self.app
        app.report("wifi_ssid", ssid)
        app.report("wifi_result", result)
        app.report("message", message)

    async def _attempt(self, ssid, password, name):
        """The credential test (the AP stays up). Whatever happens, it ends with a result, so that pages
        stop waiting and a new test can start; a failure of the test itself is logged as one."""
        app = self.app
        code = wifi.FAILED
        try:
            app.set_state(JOINING, "testing " + shown(ssid))
            self._report(ssid, None, "testing the network")
            code = await self._join(ssid, password)
            log("wifi", "%s: %s" % (shown(ssid), wifi.REASONS[code]))
            if code == wifi.JOINED:
                if wifi.saved(app.st) != (ssid, password):
                    wifi.save(app.st, ssid, password)
                    log("wifi", "credentials for %s stored" % shown(ssid))
                if name:
                    log("wifi", "device name from setup: %s" % shown(name))
                self.joined = True
                self._report(ssid, code, "connected to " + shown(ssid))
            else:
                app.set_state(PORTAL, wifi.REASONS[code])
                self._report(ssid, code, wifi.REASONS[code])
        except Exception as e:  # noqa: BLE001 - task boundary: the test failed, setup goes on
            code = wifi.FAILED
            try:
                log("setup", "credential test failed (%s)" % type(e).__name__)
                app.set_state(PORTAL, wifi.REASONS[code])
            except Exception:  # noqa: BLE001 - even without heap for the log line the test ends
                pass
        finally:
            password = None
            self._ended = app.board.ticks_ms()
            self.testing = None
            self._job = None
            self.result = (ssid, code, wifi.REASONS.get(code, code))
        return code

    async def console(self, reader=None, sleep=None):
        """The serial console in setup mode, until cancelled, a lone Ctrl-C (then self.interrupted is
        set) or the console closes. Improv's framing and RPC core (twomes.ap.improv_serial and
        twomes.ap.improv) are loaded when the first byte of its magic ("I") comes, and unloaded again
        after 5 s of silence with nothing under way (no provisioning running or done): a setup that
        does not use Improv holds neither its code nor its buffers. Without them a lone 0x03 is Ctrl-C
        and other bytes are nothing (as improv_serial.Serial judges them outside a frame). Where bytes
        of a frame may have been lost (this task failed and its supervisor started it again, or there
        was no heap to load Improv at a frame) a 0x03 is Ctrl-C only after _NOISY_MS of silence.
        `reader` (the console stream) and `sleep` (asyncio.sleep unless given: the silence's clock)
        are the tests'."""
        b = self.app.board
        b.kbd_intr(-1)  # 0x03 is data from here on (improv_serial.console: the same)
        done = False  # Improv's console ended it (Ctrl-C on again, logged)
        unsure = self._unsure  # the last console failed: mid-frame bytes may follow
        self._unsure = True  # until this one ends normally
        try:
            if reader is None:
                reader = asyncio.StreamReader(b.console_in())
            while True:
                t = b.ticks_ms()
                try:
                    data = await reader.read(1)
                except MemoryError:  # no heap for this read just now: again in a moment
                    await hw.sleep_ms(10)
                    continue
                # the line was silent for the read's own wait (a stall of the loop before it does not
                # count: the bytes waited in the console's buffer meanwhile)
                if unsure and b.ticks_diff(b.ticks_ms(), t) >= _NOISY_MS:
                    unsure = False
                if not data:
                    break  # console closed (host tests)
                if data[0] == 3 and not unsure:
                    self.interrupted = True
                    break
                if data[0] != 73:  # "I": Improv's magic starts
                    continue
                done = True
                improv_serial = None
                try:
                    from twomes.ap import improv_serial

                    app = self.app
                    args = (b, self, app.ident, VERSION, reader, data, sleep or asyncio.sleep, unsure)
                    if not await improv_serial.console(*args):
                        break
                    unsure = False  # handed back after a silence: listening here again
                except MemoryError:
                    # no heap to load Improv: the rest of its frame (a 0x03 in it) comes here, so a
                    # 0x03 is Ctrl-C only after a silence again; the next "I" tries again
                    unsure = True
                finally:
                    args = improv_serial = None
                    unload("ap.improv_serial", "ap.improv")
                done = False
            self._unsure = False
        except Exception:
            done = True  # a failure: the supervisor starts this again, 0x03 stays data until then
            raise
        finally:
            if not done:
                b.kbd_intr(3)
                log("improv", "console listener ended")

    # ---- the phase ---------------------------------------------------------------------------------
    def _tasks(self, portal):
        """Setup mode's tasks (web server, DNS, the console where Improv may come), each supervised (the seam the
        host tests replace: no console, no DNS socket). Their pauses are asyncio.sleep: the app's
        sleep_s would end a task with Restart that nobody awaits yet (a console message)."""
        app = self.app
        return [
            asyncio.create_task(supervise("portal", portal.serve)),
            asyncio.create_task(supervise("dns", dns.serve, portal.ip, app.cfg.dns_port or 53)),
            asyncio.create_task(supervise("improv", self.console)),
        ]

    async def run(self, saved):
        app = self.app
        board = app.board
        cfg = app.cfg
        await self.rescan(True)  # before the AP starts: a scan disturbs clients of the AP
        portal = Portal(board, app.ident, cfg, self, streams=self._streams)
        try:
            await portal.start()
        except OSError as e:
            log("portal", "cannot start: %s" % e)
            return "restart"
        # 0x03 is data from now on (Improv frames carry it), before anybody can see "portal" and
        # send a frame: the listener would start only at the next await (it turns it off again and
        # judges a lone Ctrl-C itself); back on when setup mode ends
        board.kbd_intr(-1)
        tasks = self._tasks(portal)
        # one turn of the loop first: each task has taken what it holds while it runs (the DNS socket
        # and its buffer, the console's listener), so the state's logged free heap is the running
        # portal's, not the heap before it
        await asyncio.sleep(0)
        app.set_state(PORTAL, "waiting for Wi-Fi settings")
        if not cfg.ap_open:  # the setup AP's own password (printed like a label), not an owner's secret
            log("setup", "access point password %s" % app.ident.ap_password)
        retry_ms = cfg.portal_retry_s * 1000
        last_try = board.ticks_ms()
        try:
            while True:
                await app.sleep_s(0.25)
                if self.interrupted:
                    raise KeyboardInterrupt()  # Ctrl-C on the console: stop the app, REPL
                if self.joined:
                    await app.sleep_s(_GRACE_MS / 1000)
                    return "joined"
                if saved is None or self.testing is not None:
                    continue
                if self._ended is not None:  # the saved network waits its full time after any test
                    last_try, self._ended = self._ended, None
                now = board.ticks_ms()
                if board.ticks_diff(now, last_try) >= retry_ms:
                    last_try = now
                    try:
                        await self.test(saved[0], saved[1])
                    except ValueError as e:  # stored credentials the rule refuses: the portal stays
                        log("setup", "saved network not tried: %s" % e)
                        saved = None
                        continue  # nothing to try again: the portal stays until settings come
                    if self.joined:
                        return "joined"
                    app.set_state(PORTAL, "waiting for Wi-Fi settings")
                if portal.idle_ms() >= cfg.portal_idle_s * 1000:
                    log(
                        "portal",
                        "no visitors for %d s: closing, trying %s again"
                        % (cfg.portal_idle_s, shown(saved[0])),
                    )
                    return "retry"
        finally:
            for t in tasks + [self._job]:
                if t is not None:
                    t.cancel()
            for t in tasks:
                # (the console may take one cancellation for its silence's, improv_serial.console)
                while not t.done():
                    t.cancel()
                    await asyncio.sleep(0)
                try:
                    await t
                except BaseException:  # noqa: BLE001 - cancelled: its `finally` has run
                    pass
            board.kbd_intr(3)
            await portal.stop()


async def run(app, saved):
    """The setup phase (see the top of this module). `saved`: stored (ssid, password) or None."""
    return await Controller(app).run(saved)
