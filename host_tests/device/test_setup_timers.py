# Setup mode's own timers on a clock the test moves (portal_fakes.TestClock, with the chip's tick
# wrap-around), in-process: the rescan limit, the retries of the saved network, the credential test's
# time limit, the idle portal, the grace after a join, and supervise()'s pauses. Each fires at its tick
# and not one tick before; no real time passes. The controller's loop sleeps with the app's sleep_s,
# supervise() and wifi.join with the sleep they are given (asyncio.sleep unless given): here
# TestClock.sleep, a sleep on the test's clock. The portal's connections come in without a socket
# (portal_fakes.Conn); the station's join is the controller's seam (_join), answered at once. Both
# runtimes. (The portal's connection limits: test_portal_deadlines.py; Improv's silences:
# test_improv.py; the same phase on a virtual board in real time: host_tests/vboard/test_vboard.py.)
import asyncio

import portal_fakes as pf
from fakectl import FakeApp, FakeCtl

import support
from twomes import wifi
from twomes.ap.controller import supervise

RESCAN_MS = 10000  # controller._RESCAN_MIN_MS (consts are not visible from outside on MicroPython)
GRACE_MS = 4000  # controller._GRACE_MS: after a join, before setup mode ends
POLL_MS = 250  # the controller's loop: one look every 250 ms (app.sleep_s(0.25))
PAUSE_MS = 500  # supervise(): before a failed task is started again (5 s after ten failures)
WRAP = 1 << 30  # the ESP32's ticks period
INFO = b"GET /api/info HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n"
HOME = ("home", "secret-pass")


async def _settle():
    """Let every task run until it waits again (no real time passes)."""
    for _ in range(100):
        await asyncio.sleep(0)


class _App(FakeApp):
    """The phase contract with sleep_s on the test's clock."""

    def __init__(self, board, ident, cfg, clock):
        FakeApp.__init__(self, board, ident, cfg)
        self.clock = clock

    async def sleep_s(self, seconds):
        await self.clock.sleep(seconds, lambda: self.stop)
        if self.stop:
            raise RuntimeError("restart")


class _Ctl(FakeCtl):
    """The real controller; its tasks are none (no console, no DNS socket: the test admits the portal's
    connections itself) and the station's join answers at once with the next of `codes` (not_found
    when none is left), or when `gate` is set, once the test opens it."""

    def __init__(self, board, ident, cfg, clock):
        app = _App(board, ident, cfg, clock)
        FakeCtl.__init__(self, board, ident, nets=[], cfg=cfg, app=app, streams=pf.streams)
        self.codes = []
        self.gate = None
        self.portal = None

    def _tasks(self, portal):
        self.portal = portal
        return []

    async def _join(self, ssid, password):
        if self.gate is not None:
            await self.gate.wait()
        return self.codes.pop(0) if self.codes else wifi.NOT_FOUND


class _Phase:
    """Controller.run(saved) in a task on a TestClock starting at t0; at(ms) moves the clock to t0 + ms
    and lets everything that is due run."""

    def __init__(self, ctl, clock, t0, task):
        self.ctl, self.clock, self.t0, self.task = ctl, clock, t0, task

    async def at(self, ms):
        self.clock.now = self.clock.ticks_add(self.t0, ms)
        await _settle()

    def tries(self):
        """The saved network's tries so far."""
        return len([s for s in self.ctl.submitted if s == (HOME[0], HOME[1], None)])

    async def outcome(self):
        assert self.task.done()
        return await self.task

    async def end(self):
        if not self.task.done():
            self.ctl.app.stop = True
            await _settle()
        try:
            await self.task
        except RuntimeError:  # the stand-in app's restart
            pass


def _phase(body, saved=HOME, t0=5000, **cfgvals):
    """Run `body(phase)` against setup mode's loop (the portal's socket bound on 127.0.0.1: a port
    someone else holds is the phase's "restart", then other ports)."""

    async def main():
        for _ in range(5):
            clock = pf.TestClock(t0)
            board, ident, cfg, _ = pf.make(clock=clock, **cfgvals)
            ctl = _Ctl(board, ident, cfg, clock)
            task = asyncio.create_task(ctl.run(saved))
            await _settle()
            if task.done():
                assert await task == "restart"
                continue
            ph = _Phase(ctl, clock, t0, task)
            try:
                await body(ph)
            finally:
                await ph.end()
            return
        raise AssertionError("no free port")

    support.run(main())


# ---- the rescan limit -------------------------------------------------------------------------------
def test_a_rescan_comes_at_its_tick_and_not_one_before_across_the_wrap_around():
    for t0 in (5000, WRAP - 4000):

        async def main(t0):
            clock = pf.TestClock(t0)
            board, ident, cfg, ctl = pf.make(clock=clock)
            assert await ctl.rescan() and ctl.rescans == 1  # the first one
            clock.now = clock.ticks_add(t0, RESCAN_MS - 1)
            assert not await ctl.rescan() and ctl.rescans == 1
            clock.now = clock.ticks_add(t0, RESCAN_MS)
            assert await ctl.rescan() and ctl.rescans == 2
            # the limit counts from that scan on
            clock.now = clock.ticks_add(t0, 2 * RESCAN_MS - 1)
            assert not await ctl.rescan() and ctl.rescans == 2
            assert await ctl.rescan(True) and ctl.rescans == 3  # setup's own first scan: always
            clock.now = clock.ticks_add(t0, 3 * RESCAN_MS - 2)
            assert not await ctl.rescan() and ctl.rescans == 3
            clock.now = clock.ticks_add(t0, 3 * RESCAN_MS - 1)
            assert await ctl.rescan() and ctl.rescans == 4

        support.run(main(t0))


# ---- the saved network's retries ------------------------------------------------------------------
def test_the_saved_network_is_tried_at_its_tick_and_not_one_before_across_the_wrap_around():
    retry = 5000

    for t0 in (5000, WRAP - 3000):

        async def first_look_late(ph):
            await ph.at(retry - 1)  # a look at the loop one tick early: not yet
            assert ph.tries() == 0
            await ph.at(retry - 1 + POLL_MS)
            assert ph.tries() == 1

        _phase(first_look_late, t0=t0, portal_retry_s=5, portal_idle_s=3600)

        async def on_time(ph):
            await ph.at(retry - POLL_MS)  # the loop's look before: its next one is at the tick
            assert ph.tries() == 0
            await ph.at(retry - 1)
            assert ph.tries() == 0
            await ph.at(retry)
            assert ph.tries() == 1 and ph.ctl.app.state == "portal"
            # not found: the next try counts from this one's end
            await ph.at(2 * retry - 1)
            assert ph.tries() == 1
            await ph.at(2 * retry)  # the loop's look one tick early was the one at 2 * retry - 1
            assert ph.tries() == 1
            await ph.at(2 * retry - 1 + POLL_MS)
            assert ph.tries() == 2

        _phase(on_time, t0=t0, portal_retry_s=5, portal_idle_s=3600)


def test_a_slow_try_of_the_saved_network_gives_the_portal_its_full_time_before_the_next():
    """The retry time counts from the end of a try: a network that keeps the station busy (up to
    wifi_timeout_s, longer than the retry time here) never keeps it busy back to back."""
    retry = 5000

    async def body(ph):
        ph.ctl.gate = asyncio.Event()  # the join hangs until the test ends it
        await ph.at(retry - POLL_MS)
        await ph.at(retry)
        assert ph.ctl.testing == HOME[0] and ph.tries() == 1
        await ph.at(retry + 20000)  # 20 s: the station's own timeout decides (not this test)
        ph.ctl.gate.set()
        await _settle()
        assert ph.ctl.testing is None and ph.tries() == 1
        await ph.at(retry + 20000 + retry - 1)  # a look 1 ms early: not yet
        assert ph.tries() == 1
        await ph.at(retry + 20000 + retry - 1 + POLL_MS)
        assert ph.tries() == 2

    _phase(body, portal_retry_s=5, portal_idle_s=3600)


def test_a_test_from_the_portal_defers_the_saved_network_by_its_full_time():
    """Someone tests a network while the saved network's try is due: the saved network is tried again
    only the retry time after that test ends, so the person can correct a typo without "busy"."""
    retry = 5000

    async def body(ph):
        ctl = ph.ctl
        ctl.gate = asyncio.Event()
        await ph.at(retry - 1000)
        ctl.codes = [wifi.WRONG_PASSWORD]
        ctl.start("home", "typo-pass")  # a person at the portal (not the saved network)
        await _settle()
        await ph.at(retry + 1000)  # the try is due, but a test runs
        assert ph.tries() == 0 and ctl.testing == "home"
        ctl.gate.set()
        await _settle()
        assert ctl.testing is None and ctl.result[1] == wifi.WRONG_PASSWORD
        ctl.gate = None
        end = retry + 1000
        await ph.at(end + POLL_MS)  # the loop looks: not yet (the person may try again)
        assert ph.tries() == 0
        await ph.at(end + retry - 1)
        assert ph.tries() == 0
        await ph.at(end + retry - 1 + POLL_MS)
        assert ph.tries() == 1

    _phase(body, portal_retry_s=5, portal_idle_s=3600)


# ---- the credential test's time limit (wifi.join) ---------------------------------------------------
def test_a_credential_test_times_out_at_its_tick_and_not_one_before():
    """A network that never answers (the simulated chip keeps trying): the join gives up after
    timeout_ms on the board's ticks (cfg.wifi_timeout_s), looking every 100 ms, and stops the driver."""
    timeout = 3000

    async def main(t0, jump, late):
        clock = pf.TestClock(t0)
        board, ident, cfg, ctl = pf.make(clock=clock)
        job = asyncio.create_task(wifi.join(board, "slow", "slowslow1", timeout, clock.sleep))
        await _settle()
        clock.now = clock.ticks_add(t0, jump)  # the join's next look
        await _settle()
        if late:
            assert not job.done()  # one tick early: still joining
            clock.advance(100)  # its next look
            await _settle()
        assert job.done() and await job == wifi.TIMEOUT
        assert board.sta.status() == board.network.STAT_IDLE  # the driver's own retries stopped

    for t0 in (5000, WRAP - 1500):
        support.run(main(t0, timeout - 1, True))
        support.run(main(t0, timeout, False))


# ---- the idle portal --------------------------------------------------------------------------------
def test_an_idle_portal_closes_at_its_tick_and_a_visitor_starts_the_time_again():
    idle = 10000

    for t0 in (5000, WRAP - 6000):

        async def early(ph):
            await ph.at(idle - 1)
            assert not ph.task.done()
            await ph.at(idle - 1 + POLL_MS)
            assert await ph.outcome() == "retry"

        _phase(early, t0=t0, portal_retry_s=3600, portal_idle_s=10)

        async def visitor(ph):
            await ph.at(idle - POLL_MS)
            c = pf.Conn(INFO)
            await ph.ctl.portal.admit(c)  # a request read at this tick: idle from here
            await _settle()
            assert bytes(c.out)[9:12] == b"200"
            back = idle - POLL_MS
            await ph.at(back + idle - 1)  # (the loop's looks are at multiples of 250 ms)
            assert not ph.task.done()
            await ph.at(back + idle - 1 + POLL_MS)
            assert await ph.outcome() == "retry"

        _phase(visitor, t0=t0, portal_retry_s=3600, portal_idle_s=10)

        async def on_time(ph):
            await ph.at(idle - POLL_MS)
            await ph.at(idle - 1)
            assert not ph.task.done()
            await ph.at(idle)
            assert await ph.outcome() == "retry"

        _phase(on_time, t0=t0, portal_retry_s=3600, portal_idle_s=10)


def test_without_saved_settings_the_portal_never_closes_for_idleness():
    async def body(ph):
        for k in range(1, 5):
            await ph.at(k * 100000)
        assert not ph.task.done() and ph.ctl.submitted == []

    _phase(body, saved=None, portal_retry_s=5, portal_idle_s=10)


# ---- the grace after a join -------------------------------------------------------------------------
def test_after_a_join_setup_ends_at_the_grace_times_tick_and_not_one_before():
    for t0 in (5000, WRAP - 2000):

        async def body(ph):
            ctl = ph.ctl
            await ph.at(100)
            ctl.codes = [wifi.JOINED]
            ctl.start(HOME[0], HOME[1])  # a person at the portal
            await _settle()
            assert ctl.joined and ctl.saved == HOME  # tested and stored at once
            await ph.at(POLL_MS)  # the loop sees it: the grace starts
            await ph.at(POLL_MS + GRACE_MS - 1)
            assert not ph.task.done()  # the phone still sees the result page
            await ph.at(POLL_MS + GRACE_MS)
            assert await ph.outcome() == "joined"

        _phase(body, saved=None, t0=t0)


# ---- supervise(): the pause before a failed task is started again ------------------------------------
def test_a_failed_task_is_started_again_at_its_tick_and_after_ten_failures_five_seconds_later():
    for t0 in (5000, WRAP - 7000):

        async def main(t0):
            clock = pf.TestClock(t0)
            starts = []

            async def task():
                starts.append(clock.ticks_diff(clock.now, t0))
                if len(starts) <= 10:
                    raise OSError("broken")

            job = asyncio.create_task(supervise("t", task, sleep=clock.sleep))
            await _settle()
            for k in range(1, 10):  # failures 1-9: 500 ms each
                clock.now = clock.ticks_add(t0, k * PAUSE_MS - 1)
                await _settle()
                assert len(starts) == k, (k, starts)
                clock.now = clock.ticks_add(t0, k * PAUSE_MS)
                await _settle()
                assert len(starts) == k + 1, (k, starts)
            tenth = 9 * PAUSE_MS  # the tenth failure: 5 s from here
            clock.now = clock.ticks_add(t0, tenth + 5000 - 1)
            await _settle()
            assert len(starts) == 10
            clock.now = clock.ticks_add(t0, tenth + 5000)
            await _settle()
            assert job.done() and await job == 10  # started 11 times, the last one returned
            assert starts == [k * PAUSE_MS for k in range(10)] + [tenth + 5000]

        support.run(main(t0))
