# The device's life in one state machine:
#
#   boot -> (no Wi-Fi credentials) portal -> joining -> activating -> confirming -> checking
#        -> running (LED solid; heartbeat + booted_fw uploads)
#   an update found by checking: rebooting -> boot -> joining -> updating (the update boot, a clean
#        heap) -> rebooting -> the new version boots, confirms, and only then is kept
#   setup mode and the online phase never share a boot: "joined", a "retry" that joins and "offline"
#        restart (the names a phase interned stay in the heap after its unload: docs/heap.md)
#
# Phases (setup, online, update) are packages loaded when they start and unloaded when they end; each
# returns an outcome and reaches the app only through the interface in docs/device-architecture.md.
# Every state has a timeout and a way out; retries back off exponentially with a per-device jitter.
# A long button press forgets Wi-Fi (portal again), a very long one is a factory reset. Secrets never
# reach the console: we say "stored".
#
# Improv Wi-Fi answers on the serial console in every phase: setup mode has its own listener (ready,
# provisioning); while the update boot and the online phase run, listen() answers "provisioned" with
# the device's URL. A lone Ctrl-C on the console stops the app (the REPL) in every phase.
import asyncio
import gc

from micropython import const

from twomes import VERSION, hw, store, unload, wifi
from twomes.errors import Restart
from twomes.log import log, printable

# Every state: its LED pattern (on/off ms; None: solid on) and, as the comment, the part of the firmware
# that sets it: app (this module), setup (twomes.ap), online (twomes.online), update (twomes.update);
# host_tests/test_device_states.py holds every set_state() in device/ to it. (The owner is not data
# here: nothing reads it at run time, and as a second column it cost 0.6K of heap.) Plain strings:
# they are what the console, the portal API and the button report.
STATES = {
    "boot": (0, 1000),  # app
    "portal": (500, 500),  # setup - AP mode: once per second, as the B00M users know it
    "joining": (100, 200),  # app, setup
    "activating": (100, 200),  # online
    "waiting": (100, 100, 100, 700),  # online - double blink: waiting for the operator / owner
    "confirming": (100, 200),  # update
    "checking": (100, 200),  # update
    "updating": (50, 50),  # update
    "rebooting": (50, 50),  # app
    "running": None,  # online - solid
    "offline": (100, 900),  # online
    "resetting": (0, 1000),  # app
}
_HOLD_WIFI = const((0, 1000))  # button held past the Wi-Fi-reset time: LED off
_HOLD_FACTORY = const((50, 50))  # past the factory-reset time: flicker (one change per poll)
_BUF = const(1024)
_POLL_MS = const(50)
_GC_EVERY = const(4096)
_GOOD_BOOT_S = const(60)  # up this long: a good boot (the boot-loop counter starts again)
_SAFE_S = const(600)  # safe mode lasts this long, then a normal restart


class App:
    def __init__(self, board, cfg, st, ident):
        self.board = board
        self.cfg = cfg
        self.st = st
        self.ident = ident
        self.state = "boot"
        self.message = ""
        self.wifi_result = None  # what the setup status shows: the last join's result and network
        self.wifi_ssid = None
        self.queue = []  # measurements waiting for upload: [(property, ticks, unix or None, value)]
        self._mac = board.mac()
        self.safe = False  # safe mode (boot loop): no update attempts
        self._bufs = None  # see buffers()
        self._stop = False  # a restart is due (button action, update installed): run() ends the flow
        self.interrupted = False  # a lone Ctrl-C on the console (the Improv listener): the REPL
        self._crash = None
        # the watch loop's state (step())
        self._t0 = board.ticks_ms()
        self._lit = self._down = self._hold = None
        self._seen = self._good = False

    # ---- what phases get -------------------------------------------------------------------------
    def set_state(self, state, message=""):
        if state not in STATES:
            raise ValueError(state)
        if state != self.state:
            gc.collect()
            log("state", "%s%s (free heap %d)" % (state, " - " + message if message else "", hw.mem_free()))
        self.state = state
        self.message = message

    def report(self, key, value):
        """What the setup status shows: "wifi_result", "wifi_ssid" or "message"."""
        if key not in ("wifi_result", "wifi_ssid", "message"):
            raise ValueError(key)
        setattr(self, key, value)

    def buffers(self, stream=True):
        """[buf, head_buf]: the streaming buffer (a memoryview) of the update boot's installers and the
        HTTP head buffer of every request, 1 KB each, each allocated once, at the first call that
        wants it - before the heap fragments. buf is None until a caller wants it (stream): the
        online phase streams nothing, and its running state has 1 KB more without it."""
        b = self._bufs
        if b is None:
            b = self._bufs = [None, bytearray(_BUF)]
        if stream and b[0] is None:
            b[0] = memoryview(bytearray(_BUF))
        return b

    def backoff(self):
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
            await hw.sleep_ms(_POLL_MS if left >= _POLL_MS else left)  # (allocates nothing)
        raise Restart()

    async def join(self, creds):
        name = printable(creds[0])  # (the SSID came from a phone: no forged console line)
        self.set_state("joining", "joining %s" % name)
        self.wifi_ssid = creds[0]
        result = await wifi.join(self.board, creds[0], creds[1], self.cfg.wifi_timeout_s * 1000)
        self.wifi_result = result
        log("wifi", "%s: %s" % (name, wifi.REASONS[result]))
        return result

    # ---- the watch loop: LED, button, time up ---------------------------------------------------
    async def watch(self):
        """step() every _POLL_MS until a restart is due. One loop, not a task each. The loop itself
        allocates nothing (hw.sleep_ms); a poll that finds no heap (MemoryError: setup mode's portal
        under attack can fill it for a moment) is skipped and the next one tries again, so the app's
        LED, button and restarts never die of a phase's load. The skipped polls are logged once the
        heap is back."""
        b = self.board
        skipped = 0
        while not self._stop:
            await hw.sleep_ms(_POLL_MS)
            if self.interrupted:
                raise KeyboardInterrupt()  # Ctrl-C on the console: stop the app, the REPL
            try:
                self.step(b.ticks_ms())
                if skipped:
                    log("app", "%d polls of the LED and button skipped: no heap" % skipped)
                    skipped = 0
            except MemoryError:
                skipped += 1

    def step(self, now):
        """One poll at `now` (ticks ms): the LED shows the state's pattern, the button is read
        (debounced: down in two polls in a row; the action is decided on release, so holding to the
        long time never triggers the short one), and the time up is checked (a good boot; safe mode
        ends with a normal restart). Tests drive it with their own clock."""
        b = self.board
        cfg = self.cfg
        up = b.ticks_diff(now, self._t0)
        pattern = self._hold or STATES[self.state]
        on = pattern is None or _lit(pattern, up)
        if on != self._lit:
            b.led_set(on)
            self._lit = on
        pressed = b.button_pressed()
        if pressed and self._seen and self._down is None:
            self._down = b.ticks_add(now, -_POLL_MS)
        self._seen = pressed
        if self._down is not None:
            held = b.ticks_diff(now, self._down)
            if not pressed:
                self._down = self._hold = None
                self.button(held)
            elif held >= cfg.hold_factory_s * 1000:
                self._hold = _HOLD_FACTORY
            elif held >= cfg.hold_wifi_s * 1000:
                self._hold = _HOLD_WIFI
        if not self._good and up >= _GOOD_BOOT_S * 1000:
            boot_loop(True)  # up for a while: this boot went well (a MemoryError: the next poll again)
            self._good = True
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
        self._stop = True  # the restart is due whatever follows meets (a full heap)
        good_boot()  # a person's action, not a boot that went wrong
        self.set_state("resetting")

    # ---- the flow --------------------------------------------------------------------------------
    async def run(self):
        """Run until a restart is due (button action, update installed, a phase asks for it). The flow
        runs as a task: a restart cancels it wherever it is (a join, a download)."""
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
        setup_ran = False
        try:
            while True:
                creds = wifi.saved(self.st)
                if creds is None or await self.join(creds) != wifi.JOINED:
                    setup_ran = True
                    outcome = await self.phase(self.setup, creds)
                    if outcome == "joined":
                        # working credentials are stored: go online from a clean boot, so the portal
                        # leaves no holes in the heap (the station joins again in ~1 s). A restart
                        # somebody asked for is a good boot: it never counts towards safe mode
                        log("setup", "Wi-Fi settings work: restarting to go online")
                        good_boot()
                        raise Restart()
                    if outcome == "restart":
                        raise Restart()
                    continue  # "retry": the saved network again
                if setup_ran:
                    # joined after setup mode gave up waiting ("retry"): online from a clean boot too.
                    # Setup's names stay interned after its unload (docs/heap.md): with the online
                    # phase's on top they would take the qstr pool past its next doubling (7.4 KB)
                    log("setup", "the saved network works again: restarting to go online")
                    good_boot()
                    raise Restart()
                listener = self.listen()  # Improv: provisioned, the device's URL
                try:
                    # an update the previous boot found is installed now, from a clean heap
                    done = await self.phase(self.update_boot)
                    if done == "installed":
                        self.set_state("rebooting", "into the new version")
                        good_boot()  # deliberate: the new version's boots are counted from here
                        raise Restart()
                    if done == "failed":
                        # counted and reported: the online phase from a clean boot, as after setup
                        # mode (the installer's names stay interned; a download can leave holes)
                        log("update", "restarting to go online from a clean heap")
                        good_boot()
                        raise Restart()
                    if await self.phase(self.online, creds) == "update":
                        self.set_state("rebooting", "to install an update")
                        raise Restart()
                    # "offline" (Wi-Fi gone for good): the saved network, then setup mode, from a clean
                    # boot: the online phase's names stay interned after its unload, and setup mode on
                    # top of them would pass the qstr pool's next doubling (docs/heap.md)
                    log("online", "Wi-Fi gone: restarting to try it again from a clean heap")
                    good_boot()
                    raise Restart()
                finally:
                    listener.cancel()
        except Restart:
            pass
        except Exception as e:  # noqa: BLE001 - handed to main(), which logs it and restarts
            self._crash = e
        finally:
            self._stop = True

    async def phase(self, start, *args):
        """Run a phase (`await start(*args)`: one of the three below) and then unload every module it
        loaded, so that its code and data leave the heap before the next phase. Returns its outcome."""
        import sys

        before = list(sys.modules)
        try:
            return await start(*args)
        finally:
            unload(*[n[7:] for n in sys.modules if n[:7] == "twomes." and n not in before])

    def listen(self):
        """The console while the app runs (twomes.ap.improv_run: Ctrl-C, Improv answers "provisioned"
        with the device's page on the server): a task, cancel it to stop. Its module is loaded here,
        before the phases (which unload only what they load), and unloaded when it ends."""
        import sys

        before = list(sys.modules)
        from twomes.ap import improv_run

        url = "%s/admin/devices/%s" % (self.cfg.server_url.rstrip("/"), self.ident.name)
        mods = [n[7:] for n in sys.modules if n[:7] == "twomes." and n not in before]
        return asyncio.create_task(self._listen(improv_run.run, url, mods))

    async def _listen(self, run, url, mods):
        try:
            await run(self, url)
        except Exception as e:  # noqa: BLE001 - task boundary: Improv is a convenience, the app goes on
            log("improv", "console listener failed (%s)" % type(e).__name__)
        finally:
            run = None
            unload(*mods)

    async def setup(self, saved):
        """AP mode: portal, app API, Improv. "joined", "retry" or "restart"."""
        from twomes.ap import controller

        return await controller.run(self, saved)

    async def online(self, creds):
        """Activation, confirmation, the firmware check, running. "update" or "offline"."""
        from twomes.online import phase

        return await phase.run(self, creds)

    async def update_boot(self):
        """The job the previous boot's check saved, if any: "installed", "failed" or "none". The update
        state says whether there is one; the job's module is loaded only to run one (its names stay
        interned for the whole boot, docs/heap.md)."""
        from twomes.update import state

        if not state.job_saved():
            return "none"
        from twomes.update import job

        return await job.run(self, self.server())

    def server(self):
        """Where updates come from (the seam, docs/device-architecture.md): the Twomes server, or an
        Eclipse hawkBit DDI server (config updates = "hawkbit")."""
        if self.cfg.updates == "hawkbit":
            from twomes.online.ddi import Ddi

            return Ddi(self)
        from twomes.online.server import Server

        return Server(self)

    def activated(self):
        """A session token is stored (the key in store.py; not through online.server, whose names would
        stay interned in the heap of the phase that asks)."""
        return self.st.get(store.SESSION) is not None


def _lit(pattern, t):
    """Whether the LED is on at `t` ms into the repeating pattern (on ms, off ms, on ms, ...)."""
    t %= sum(pattern)
    i = 0
    while t >= pattern[i]:
        t -= pattern[i]
        i += 1
    return i % 2 == 0


def boot_loop(good=False):
    """The boot-loop counter (twomes/update/state.py): True in safe mode; good=True: this boot went
    well, the count starts again. The state module is loaded for this and unloaded."""
    from twomes.update import state

    try:
        if good:
            state.good_boot()
            return False
        return state.safe_mode()
    finally:
        state = None
        unload("update.state", "update")


def good_boot():
    """A restart somebody asked for (a person, a phase's outcome) is a good boot: the boot-loop count
    starts again. Without heap for the counter's module (setup mode's holes just after a join, at the
    smallest heaps) the count is left as it is - this boot then counts once towards safe mode, until
    the next good one - and the restart goes on: a full heap never stops one."""
    try:
        boot_loop(True)
    except MemoryError:
        try:
            log("app", "no heap to count this boot as good: restarting all the same")
        except MemoryError:
            pass


def main():
    """Entry point from main.py: build the real board and run until a restart is due."""
    board = None
    # Collect after every _GC_EVERY bytes allocated, not only when the heap is full: garbage then never
    # piles up between long-lived objects, so the holes it leaves stay small and few.
    gc.threshold(_GC_EVERY)
    try:
        from twomes import start

        board, cfg, st, ident = start.boot()
        unload("start", "config", "identity", "online.server", "online.http", "online")  # done with
        app = App(board, cfg, st, ident)
        app.safe = boot_loop()
        asyncio.run(app.run())
    except Exception as e:  # noqa: BLE001 - the last line of defence: log and restart, never hang
        import sys

        sys.print_exception(e)
        log("boot", "unexpected error: restarting in 5 s")
        import time

        time.sleep(5)
    if board is None:  # the config or the board itself failed
        hw.reset()
    else:
        board.reset()
