# The device's life in one state machine:
#
#   boot -> (no Wi-Fi credentials) portal -> joining -> activating -> confirming -> checking
#        -> running (LED solid; heartbeat + booted_fw uploads)
#   an update found by checking: rebooting -> boot -> joining -> updating (twomes/update.py, a clean
#        heap) -> rebooting -> the new version boots, confirms, and only then is kept
#
# Every state has a timeout and a way out; retries back off exponentially with a per-device jitter
# (from the MAC) so a fleet does not retry in step. A long button press forgets Wi-Fi (portal again),
# a very long one is a factory reset. Secrets never reach the console: we say "stored".
import asyncio
import gc
import os

from micropython import const

from twomes import JOB, VERSION, store, wifi
from twomes.log import log

BOOT = "boot"
PORTAL = "portal"
JOINING = "joining"
ACTIVATING = "activating"
CONFIRMING = "confirming"
CHECKING = "checking"
UPDATING = "updating"
REBOOTING = "rebooting"
RUNNING = "running"
OFFLINE = "offline"
RESETTING = "resetting"

# LED patterns: (on ms, off ms)
_LED = {
    PORTAL: (500, 500),  # AP mode: once per second, as the B00M users know it
    JOINING: (100, 200),
    ACTIVATING: (100, 200),
    CONFIRMING: (100, 200),
    CHECKING: (100, 200),
    UPDATING: (50, 50),
    REBOOTING: (50, 50),
    OFFLINE: (100, 900),
    "error": (100, 100, 100, 700),  # double blink: waiting for the operator (not registered/attached)
    "hold_wifi": (0, 1000),  # button held past the Wi-Fi-reset time: LED off
    "hold_factory": (30, 30),  # past the factory-reset time: flicker
}
_BUF = const(1024)
_POLL_MS = const(50)
_GOOD_BOOT_S = const(60)  # up this long: a good boot (the boot-loop counter of otaboot starts again)
_SAFE_S = const(600)  # safe mode lasts this long, then a normal restart
_SAFE_AFTER = const(5)  # = otaboot.SAFE_AFTER: more failed boots in a row than this, safe mode


class Backoff:
    """Exponential backoff, capped, scaled by a fixed per-device factor in [0.75, 1.25)."""

    def __init__(self, base_s, max_s, mac):
        self.base = base_s
        self.max = max_s
        self.factor = 0.75 + ((mac[4] << 8 | mac[5]) % 1000) / 2000
        self.n = 0

    def next_s(self):
        d = min(self.max, self.base * (1 << min(self.n, 16)))
        self.n += 1
        return d * self.factor

    def reset(self):
        self.n = 0


class Restart(Exception):
    """Leave the state machine and reset the board (button actions, update installed)."""


def unload(*names):
    """Forget modules of a finished phase so their code leaves the heap."""
    import sys

    import twomes

    for n in names:
        sys.modules.pop("twomes." + n, None)
        twomes.__dict__.pop(n, None)
    gc.collect()


class App:
    Restart = Restart
    unload = staticmethod(unload)

    def __init__(self, board, cfg, st, ident):
        self.board = board
        self.cfg = cfg
        self.st = st
        self.ident = ident
        self.state = BOOT
        self.led_override = None
        self.message = ""
        self.wifi_result = None
        self.wifi_ssid = None
        self._joined = None  # (ssid, password) that work, from the portal/Improv or the saved ones
        self.queue = []  # measurements waiting for upload: [(property, ticks, unix or None, value)]
        self._mac = board.mac()
        self.safe = False  # safe mode (boot loop): no update attempts (main() decides, otaboot counts)
        self.buf = self.head_buf = None  # see buffers()
        self._restart = asyncio.Event()
        self._crash = None

    # ---- small helpers ---------------------------------------------------------------------------
    def set_state(self, state, message=""):
        if state != self.state:
            gc.collect()
            free = gc.mem_free() if hasattr(gc, "mem_free") else -1  # -1: CPython host tests
            log("state", "%s%s (free heap %d)" % (state, " - " + message if message else "", free))
        self.state = state
        self.message = message

    def buffers(self):
        """The streaming buffer and the HTTP header buffer, allocated once by the first online or
        update phase: that runs in a clean boot (the portal restarts the board), so they come before
        the heap fragments; the portal never needs them."""
        if self.buf is None:
            self.buf = memoryview(bytearray(_BUF))
            self.head_buf = bytearray(_BUF)

    def backoff(self):
        return Backoff(self.cfg.retry_base_s, self.cfg.retry_max_s, self._mac)

    async def sleep_s(self, seconds):
        """Sleep, but wake at once when a button action asks for a restart."""
        try:
            await asyncio.wait_for(self._restart.wait(), seconds)
        except asyncio.TimeoutError:
            return
        raise Restart()

    def activated(self):
        return self.st.get(store.SESSION) is not None

    def print_identity(self):
        if self.activated():
            return
        # exactly one line, valid JSON: the operator registers the device with it
        print(self.ident.activation_line)
        if not self.cfg.ap_open:  # the setup AP's password, as on a label (not a Wi-Fi secret of the owner)
            log("setup", "access point %s, password %s" % (self.ident.name, self.ident.ap_password))

    # ---- tasks -----------------------------------------------------------------------------------
    async def led_task(self):
        while True:
            pattern = self.led_override or _LED.get(self.state)
            if pattern is None:  # running: solid; boot: off
                self.board.led_set(self.state == RUNNING)
                await asyncio.sleep(_POLL_MS / 1000)
                continue
            for i in range(len(pattern)):
                self.board.led_set(i % 2 == 0 and pattern[i] > 0)
                left = pattern[i]
                while left > 0 and (self.led_override or _LED.get(self.state)) is pattern:
                    await asyncio.sleep(min(left, _POLL_MS) / 1000)  # a new pattern shows at once
                    left -= _POLL_MS
                if (self.led_override or _LED.get(self.state)) is not pattern:
                    break

    async def button_task(self):
        """Polled and debounced. Short press: show state. Hold: forget Wi-Fi. Very long: factory reset.
        The action is decided on release, so holding to the long time never triggers the short one."""
        b = self.board
        down_since = None
        while True:
            await asyncio.sleep(_POLL_MS / 1000)
            pressed = b.button_pressed()
            now = b.ticks_ms()
            if pressed and down_since is None:
                await asyncio.sleep(_POLL_MS / 1000)  # debounce: must still be down
                if b.button_pressed():
                    down_since = now
                continue
            if down_since is None:
                continue
            held = b.ticks_diff(now, down_since)
            if pressed:
                if held >= self.cfg.hold_factory_s * 1000:
                    self.led_override = _LED["hold_factory"]
                elif held >= self.cfg.hold_wifi_s * 1000:
                    self.led_override = _LED["hold_wifi"]
                continue
            down_since = None
            self.led_override = None
            if held >= self.cfg.hold_factory_s * 1000:
                self.factory_reset()
            elif held >= self.cfg.hold_wifi_s * 1000:
                self.forget_wifi()
            else:
                log(
                    "button",
                    "state %s, firmware %s, device %s%s"
                    % (self.state, VERSION, self.ident.name, ", " + self.message if self.message else ""),
                )

    async def good_boot(self):
        """Up for a while: this boot went well. In safe mode, after a while a normal restart."""
        await asyncio.sleep(_GOOD_BOOT_S)
        boot_guard(True)
        if self.safe:
            await asyncio.sleep(_SAFE_S - _GOOD_BOOT_S)
            self._restart.set()

    def forget_wifi(self):
        log("button", "long press: forgetting Wi-Fi, back to setup (identity and activation kept)")
        self.st.delete(store.WIFI_SSID)
        self.st.delete(store.WIFI_PASS)
        self.st.commit()
        self.set_state(RESETTING)
        self._restart.set()

    def factory_reset(self):
        log("button", "very long press: factory reset, everything forgotten")
        self.st.erase_all()
        self.set_state(RESETTING)
        self._restart.set()

    # ---- the flow --------------------------------------------------------------------------------
    async def run(self):
        """Run until a restart is due (button action, update installed, confirmation impossible). The
        flow runs as a task: a button action cancels it wherever it is (a join, a download)."""
        tasks = [asyncio.create_task(self.led_task()), asyncio.create_task(self.button_task())]
        tasks.append(asyncio.create_task(self.good_boot()))
        flow = asyncio.create_task(self._flow())
        try:
            await self._restart.wait()
        finally:
            for t in tasks + [flow]:
                t.cancel()
        try:
            await flow
        except asyncio.CancelledError:
            pass
        if self._crash is not None:
            raise self._crash
        self.set_state(RESETTING)
        await asyncio.sleep(0.2)  # let the last lines out

    async def _flow(self):
        try:
            await self.flow()
        except Restart:
            pass
        except Exception as e:  # noqa: BLE001 - handed to main(), which logs it and restarts
            self._crash = e
        finally:
            self._restart.set()

    async def flow(self):
        while True:
            creds = (self.st.get(store.WIFI_SSID), self.st.get(store.WIFI_PASS))
            if creds[0] is None or creds[1] is None:
                await self.portal(None)
            elif await self.join(creds) != wifi.JOINED:
                await self.portal(creds)
            else:
                self._joined = creds
                if exists(JOB):  # the previous boot found an update: install it from a clean heap
                    await self.update()
                await self.online(creds)
                continue
            if self._joined is not None:
                # working credentials are stored: start the online phase from a clean boot, so the
                # portal's code leaves no holes in the heap (the station joins again in ~1 s)
                log("setup", "Wi-Fi settings work: restarting to go online")
                raise Restart()

    async def online(self, creds):
        from twomes.online import Online

        phase = Online(self)
        try:
            await phase.run(creds)
        finally:
            phase = None
            unload("online", "api", "http", "fw")

    async def update(self):
        from twomes.update import Job

        job = Job(self)
        try:
            await job.run()
        finally:
            job = None
            unload("update", "http", "ota", "ota_image")

    async def join(self, creds):
        self.set_state(JOINING, "joining %s" % creds[0])
        self.wifi_ssid = creds[0]
        result = await wifi.join(self.board, creds[0], creds[1], self.cfg.wifi_timeout_s * 1000)
        self.wifi_result = result
        log("wifi", "%s: %s" % (creds[0], wifi.REASONS[result]))
        return result

    async def portal(self, saved):
        """AP mode: captive portal, app API and Improv until credentials work (twomes/setup.py)."""
        unload("online", "api", "http", "fw", "update", "ota", "ota_image")
        from twomes.setup import Setup

        phase = Setup(self)
        try:
            await phase.run(saved)
        finally:
            phase = None
            unload("setup", "portal", "portal_page", "captive_dns", "improv", "httpserv")


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def boot_guard(good=False):
    """otaboot's boot-loop counter (ota/boots): True in safe mode; good=True: this boot went well, the
    count starts again. Read here directly: loading otaboot for it would cost more heap than this."""
    try:
        with open("ota/boots") as f:
            n = int(f.read())
        if good:
            os.remove("ota/boots")
    except (OSError, ValueError):
        return False
    return n > _SAFE_AFTER


def _boot():
    """Config, board and identity; the modules that made them are unloaded before the app runs."""
    from twomes import config, identity
    from twomes.hw import Board

    cfg = config.load()
    log("boot", "twomes firmware %s" % VERSION)
    for problem in cfg.problems:
        log("config", problem)
    cfg.problems = None
    board = Board(cfg)
    st = store.Store(board.nvs("twomes"))
    ident = identity.load(st, board.mac(), cfg, os.urandom)
    log("boot", "device %s (%s)" % (ident.name, cfg.device_type))
    return board, cfg, st, ident


def main():
    """Entry point from main.py: build the real board and run until a restart is due."""
    board = None
    try:
        board, cfg, st, ident = _boot()
        unload("identity", "config")
        app = App(board, cfg, st, ident)
        app.safe = boot_guard()
        app.print_identity()
        asyncio.run(app.run())
    except Exception as e:  # noqa: BLE001 - the last line of defence: log and restart, never hang
        import sys

        sys.print_exception(e)
        log("boot", "unexpected error: restarting in 5 s")
        import time

        time.sleep(5)
    if board is None:  # the config or the board itself failed
        from twomes import hw

        hw.reset()
    board.reset()
