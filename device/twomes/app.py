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

from twomes import JOB, VERSION, store, unload, wifi
from twomes.log import log

# States (plain strings: they are what the console, the portal API and the button report): boot,
# portal, joining, activating, waiting (for the operator), confirming, checking, updating, rebooting,
# running, offline, resetting.
# No module-level name for each: on this heap every global costs a dict slot and a qstr for good.

# LED patterns: (on ms, off ms)
_LED = {
    "portal": (500, 500),  # AP mode: once per second, as the B00M users know it
    "joining": (100, 200),
    "activating": (100, 200),
    "confirming": (100, 200),
    "checking": (100, 200),
    "updating": (50, 50),
    "rebooting": (50, 50),
    "offline": (100, 900),
    "waiting": (100, 100, 100, 700),  # double blink: waiting for the operator (not registered/attached)
    "hold_wifi": (0, 1000),  # button held past the Wi-Fi-reset time: LED off
    "hold_factory": (30, 30),  # past the factory-reset time: flicker
}
_BUF = const(1024)
_POLL_MS = const(50)
_GC_EVERY = const(4096)
_GOOD_BOOT_S = const(60)  # up this long: a good boot (the boot-loop counter of otaboot starts again)
_SAFE_S = const(600)  # safe mode lasts this long, then a normal restart
_SAFE_AFTER = const(5)  # = otaboot.SAFE_AFTER: more failed boots in a row than this, safe mode


class Restart(Exception):
    """Leave the state machine and reset the board (button actions, update installed)."""


class App:
    Restart = Restart
    unload = staticmethod(unload)

    def __init__(self, board, cfg, st, ident):
        self.board = board
        self.cfg = cfg
        self.st = st
        self.ident = ident
        self.state = "boot"
        self.led_override = None
        self.message = ""
        self.wifi_result = None
        self.wifi_ssid = None
        self.queue = []  # measurements waiting for upload: [(property, ticks, unix or None, value)]
        self._mac = board.mac()
        self.safe = False  # safe mode (boot loop): no update attempts (main() decides, otaboot counts)
        self.buf = self.head_buf = None  # see buffers()
        self._stop = False  # a restart is due (button action, update installed): run() ends the flow
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
        """Retry delays for the online phase and the update boot (loaded and unloaded with them)."""
        from twomes.backoff import Backoff

        return Backoff(self.cfg.retry_base_s, self.cfg.retry_max_s, self._mac)

    async def sleep_s(self, seconds):
        """Sleep, but wake within _POLL_MS when a restart is due (a button action): Restart."""
        b = self.board
        end = b.ticks_add(b.ticks_ms(), int(seconds * 1000))
        while not self._stop:
            left = b.ticks_diff(end, b.ticks_ms())
            if left <= 0:
                return
            await asyncio.sleep(0.05 if left >= _POLL_MS else left / 1000)  # a literal: no new float
        raise Restart()

    def activated(self):
        return self.st.get(store.SESSION) is not None

    # ---- the watch loop: LED, button, time up ---------------------------------------------------
    async def watch(self):
        """Every _POLL_MS until a restart is due: the LED shows the state's pattern (a new one at once),
        the button is read (debounced: down in two polls in a row; the action is decided on release,
        so holding to the long time never triggers the short one), and the time up is checked (a good
        boot for otaboot's counter; safe mode ends with a normal restart). One loop, not a task each."""
        b = self.board
        cfg = self.cfg
        t0 = b.ticks_ms()
        lit = down = None  # LED as last set; ticks when the button went down
        seen = good = False  # button down at the previous poll; this boot counted as good
        while not self._stop:
            await asyncio.sleep(0.05)  # _POLL_MS; a literal: one float for good, not a new one each time
            now = b.ticks_ms()
            up = b.ticks_diff(now, t0)
            pattern = self.led_override or _LED.get(self.state)
            on = self.state == "running" if pattern is None else _lit(pattern, up)  # running: solid
            if on != lit:
                b.led_set(on)
                lit = on
            pressed = b.button_pressed()
            if pressed and seen and down is None:
                down = b.ticks_add(now, -_POLL_MS)
            seen = pressed
            if down is not None:
                held = b.ticks_diff(now, down)
                if not pressed:
                    down = self.led_override = None
                    self.button(held)
                elif held >= cfg.hold_factory_s * 1000:
                    self.led_override = _LED["hold_factory"]
                elif held >= cfg.hold_wifi_s * 1000:
                    self.led_override = _LED["hold_wifi"]
            if not good and up >= _GOOD_BOOT_S * 1000:
                good = True
                boot_guard(True)  # up for a while: this boot went well
            if self.safe and up >= _SAFE_S * 1000:
                self._stop = True

    def button(self, held_ms):
        """Short press: show the state. Hold: forget Wi-Fi, back to setup. Very long: factory reset."""
        if held_ms >= self.cfg.hold_factory_s * 1000:
            log("button", "very long press: factory reset, everything forgotten")
            self.st.erase_all()
        elif held_ms >= self.cfg.hold_wifi_s * 1000:
            log("button", "long press: forgetting Wi-Fi, back to setup (identity and activation kept)")
            wifi.forget(self.st)
        else:
            log(
                "button",
                "state %s, firmware %s, device %s%s"
                % (self.state, VERSION, self.ident.name, ", " + self.message if self.message else ""),
            )
            return
        self.set_state("resetting")
        self._stop = True

    # ---- the flow --------------------------------------------------------------------------------
    async def run(self):
        """Run until a restart is due (button action, update installed, confirmation impossible). The
        flow runs as a task: a restart cancels it wherever it is (a join, a download)."""
        flow = asyncio.create_task(self.flow())
        try:
            await self.watch()
        finally:
            flow.cancel()
        try:
            await flow
        except asyncio.CancelledError:
            pass
        if self._crash is not None:
            raise self._crash
        self.set_state("resetting")
        await asyncio.sleep(0.2)  # let the last lines out

    async def flow(self):
        try:
            while True:
                creds = wifi.saved(self.st)
                if creds is not None and await self.join(creds) == wifi.JOINED:
                    if exists(JOB):  # the previous boot found an update: install it from a clean heap
                        await self.update()
                    await self.phase("online", "Online", creds)
                    continue
                outcome = await self.setup(creds)  # AP mode: portal, app API, Improv
                if outcome == "joined":
                    # working credentials are stored: start the online phase from a clean boot, so the
                    # portal's code leaves no holes in the heap (the station joins again in ~1 s)
                    log("setup", "Wi-Fi settings work: restarting to go online")
                    raise Restart()
                if outcome == "restart":
                    raise Restart()
                # "retry": the saved network again
        except Restart:
            pass
        except Exception as e:  # noqa: BLE001 - handed to main(), which logs it and restarts
            self._crash = e
        finally:
            self._stop = True

    async def phase(self, name, cls, *args):
        """Run a phase (twomes.online, .update: `cls(app).run(*args)`) and then unload every
        module it loaded, so that its code leaves the heap before the next phase."""
        import sys

        before = list(sys.modules)
        try:
            await getattr(__import__("twomes." + name, None, None, (cls,)), cls)(self).run(*args)
        finally:
            unload(*[n[7:] for n in sys.modules if n[:7] == "twomes." and n not in before])

    async def setup(self, saved):
        """The setup phase (twomes.ap.controller.run): an outcome, "joined", "retry" or "restart"."""
        import sys

        before = list(sys.modules)
        try:
            from twomes.ap import controller

            return await controller.run(self, saved)
        finally:
            controller = None
            unload(*[n[7:] for n in sys.modules if n[:7] == "twomes." and n not in before])

    def report(self, key, value):
        """What a phase reports for the status (wifi_ssid, wifi_result, message)."""
        setattr(self, key, value)

    async def update(self):
        """The update boot: install the release the check saved (twomes/update.py)."""
        await self.phase("update", "Job")

    async def join(self, creds):
        self.set_state("joining", "joining %s" % creds[0])
        self.wifi_ssid = creds[0]
        result = await wifi.join(self.board, creds[0], creds[1], self.cfg.wifi_timeout_s * 1000)
        self.wifi_result = result
        log("wifi", "%s: %s" % (creds[0], wifi.REASONS[result]))
        return result


def _lit(pattern, t):
    """Whether the LED is on at `t` ms into the repeating pattern (on ms, off ms, on ms, ...)."""
    t %= sum(pattern)
    i = 0
    while t >= pattern[i]:
        t -= pattern[i]
        i += 1
    return i % 2 == 0


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


def main():
    """Entry point from main.py: build the real board and run until a restart is due."""
    board = None
    # Collect after every _GC_EVERY bytes allocated, not only when the heap is full: garbage then never
    # piles up between long-lived objects, so the holes it leaves stay small and few and the big
    # blocks (qstr pools, buffers) still find room. On this heap that is worth ~8 KB.
    gc.threshold(_GC_EVERY)
    try:
        from twomes import start

        board, cfg, st, ident = start.boot()
        unload("start", "config", "identity")  # their job is done
        app = App(board, cfg, st, ident)
        app.safe = boot_guard()
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
