# The portal's time limits on a clock the test moves (portal_fakes.TestClock, with the chip's tick
# wrap-around) and connections without a socket (portal_fakes.Conn): each limit fires at its tick and
# not one tick before, nothing here waits for real time. Portal.admit() is what the accept loop does
# with a new connection, Portal.tick() is its deadline check. Both runtimes. The same limits over real
# sockets and real time, with wide margins: test_portal_http.py and test_portal_hostile.py.
import asyncio
import json

import portal_fakes as pf

import support
from twomes.ap.portal import SLOTS, Portal

GRACE_MS = 1000  # portal._GRACE_MS (a const: not visible from outside on MicroPython)
PAUSE_MS = 100  # after an error answer: what the client still sends is read until it pauses this long
INFO = b"GET /api/info HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n"
PART = b"GET / HTTP/1.1\r\nHost: 192.168.4.1\r\n"  # a head that never ends


def _portal(clock=None):
    clock = clock or pf.TestClock(1000)
    board, ident, cfg, ctl = pf.make(clock=clock)
    return Portal(board, ident, cfg, ctl, SLOTS, pf.streams), clock


async def _settle():
    """Let every task run until it waits again (no real time passes)."""
    for _ in range(40):
        await asyncio.sleep(0)


async def _at(p, clock, t0, ms):
    """The clock at t0 + ms, then the portal's deadline check and what it sets off."""
    clock.now = clock.ticks_add(t0, ms)
    p.tick()
    await _settle()


async def _admit(p, data=b"", reading=True):
    c = pf.Conn(data, reading)
    await p.admit(c)
    await _settle()
    return c


def _status(c):
    return bytes(c.out)[9:12]


async def _all_answered(p, conns):
    """The clients read their answers: each got a 200 and every slot is free again."""
    for c in conns:
        c.read_answers()
    await _settle()
    assert all(_status(c) == b"200" for c in conns) and p.busy() == 0


def _go(body, clock=None):
    async def main():
        p, clk = _portal(clock)
        try:
            await body(p, clk)
        finally:
            await p.stop()

    support.run(main())


def test_the_limits_are_the_documented_ones():
    p, _ = _portal()
    assert (p.head_ms, p.body_ms, p.write_ms, len(p.slots)) == (5000, 5000, 10000, 4)


def test_a_request_in_time_is_answered_and_its_slot_freed():
    async def body(p, clock):
        c = await _admit(p, INFO)
        assert _status(c) == b"200" and c.closed and p.busy() == 0
        assert json.loads(bytes(c.out).partition(b"\r\n\r\n")[2])["name"] == p.ident.name
        assert p.too_slow == 0 and p.idle_ms() == 0

    _go(body)


def test_idle_time_counts_from_the_last_request_read():
    async def body(p, clock):
        t0 = clock.now
        await _at(p, clock, t0, 1234)
        assert p.idle_ms() == 1234
        c = await _admit(p, PART)  # a connection is not a request yet
        await _at(p, clock, t0, 2000)
        assert p.idle_ms() == 2000
        c.feed(b"\r\n")  # its head complete: a request
        await _settle()
        assert _status(c) == b"302" and p.idle_ms() == 0
        await _at(p, clock, t0, 2500)
        assert p.idle_ms() == 500

    _go(body)


def test_a_head_that_never_ends_gets_408_at_head_ms_and_not_one_tick_before():
    async def body(p, clock):
        for sent in (b"", PART):  # silent, or the head begun and never finished
            t0 = clock.now
            c = await _admit(p, sent)
            await _at(p, clock, t0, p.head_ms - 1)
            assert not c.out and not c.closed and p.busy() == 1, c.out
            # what arrives meanwhile is read (a silent connection's first bytes at the accept loop's
            # next turn: its deadline check), but does not move the head's deadline
            c.feed(b"X-More: 1\r\n" if sent else b"GET / HTTP/1.1\r\n")
            await _at(p, clock, t0, p.head_ms - 1)
            assert not c.inbox and p.busy() == 1 and not c.out
            await _at(p, clock, t0, p.head_ms)
            assert _status(c) == b"408" and b"request too slow" in c.out, c.out
            assert p.too_slow == (1 if not sent else 2)
            c.shut()  # the client is done sending: closed, the slot free
            await _settle()
            assert c.closed and p.busy() == 0

    _go(body)


def test_a_silent_connection_is_held_without_a_task_until_its_first_bytes():
    """A connection that has sent nothing (a browser's spare one, an idle client) has its slot and
    socket but no task (no stream, no coroutines) until its first bytes are in: the accept loop's
    deadline check (tick) looks at it, starts its request then, frees the slot of one that hangs up,
    and answers 408 at head_ms to one that stays silent."""

    async def body(p, clock):
        t0 = clock.now
        talks, quits, silent = await _admit(p), await _admit(p), await _admit(p)
        assert p.busy() == 3 and all(s.task is None for s in p.slots if s.sock is not None)
        talks.feed(INFO)
        quits.shut()
        await _settle()
        assert talks.inbox and not quits.closed  # nobody reads them between two turns of the loop
        await _at(p, clock, t0, 1)
        assert not talks.inbox and talks.closed and _status(talks) == b"200"
        assert quits.closed and not quits.out and p.busy() == 1
        assert [s.task for s in p.slots if s.sock is not None] == [None]
        await _at(p, clock, t0, p.head_ms - 1)
        assert not silent.out and not silent.closed and p.busy() == 1
        await _at(p, clock, t0, p.head_ms)
        assert silent.closed and _status(silent) == b"408" and p.busy() == 0 and p.too_slow == 1
        head, _, text = bytes(silent.out).partition(b"\r\n\r\n")
        assert text == b"408 request too slow\n", silent.out
        assert head.endswith(b"\r\nContent-Length: 21"), head
        assert b"Content-Type: text/plain; charset=utf-8" in head

    _go(body)


def test_a_silent_connection_without_heap_for_its_task_gets_come_again():
    """No heap for the task of a connection whose first bytes came: the "come again" 503 at once, its
    slot free, and the next connection is served."""

    async def body(p, clock):
        c = await _admit(p)
        real = asyncio.create_task
        asyncio.create_task = _starved
        try:
            c.feed(INFO)
            await _at(p, clock, clock.now, 1)
        finally:
            asyncio.create_task = real
        assert c.closed and _status(c) == b"503" and p.refused == 1 and p.busy() == 0
        again = await _admit(p, INFO, reading=False)
        await _all_answered(p, [again])

    _go(body)


def _starved(coro):
    coro.close()
    raise MemoryError("memory allocation failed, allocating 64 bytes")


def test_a_body_too_slow_gets_408_at_body_ms_after_the_head():
    async def body(p, clock):
        t0 = clock.now
        head = b"POST /api/wifi HTTP/1.1\r\nHost: 192.168.4.1\r\nContent-Type: application/json\r\n"
        c = await _admit(p, head)
        # the head ends at 4 s (within head_ms); the body's time runs from there, past the head's limit
        await _at(p, clock, t0, 4000)
        c.feed(b'Content-Length: 40\r\n\r\n{"ssid": "home",')
        await _settle()
        await _at(p, clock, t0, p.head_ms)
        assert not c.out and p.busy() == 1
        await _at(p, clock, t0, 4000 + p.body_ms - 1)
        assert not c.out and not c.closed
        await _at(p, clock, t0, 4000 + p.body_ms)
        assert _status(c) == b"408", c.out
        assert json.loads(bytes(c.out).partition(b"\r\n\r\n")[2]) == {"error": "request too slow"}
        assert p.ctl.submitted == [] and p.too_slow == 1

    _go(body)


def test_a_client_that_does_not_read_the_answer_is_closed_at_write_ms():
    async def body(p, clock):
        t0 = clock.now
        c = await _admit(p, INFO, reading=False)
        assert p.busy() == 1 and p.idle_ms() == 0
        await _at(p, clock, t0, p.write_ms - 1)
        assert not c.closed and p.busy() == 1
        await _at(p, clock, t0, p.write_ms)
        assert c.closed and not c.out and p.busy() == 0  # closed, nothing more sent
        assert p.too_slow == 0  # not a 408: the request was read
        # one that starts reading a tick before the limit gets the whole answer
        t0 = clock.now
        c = await _admit(p, INFO, reading=False)
        await _at(p, clock, t0, p.write_ms - 1)
        c.read_answers()
        await _settle()
        assert _status(c) == b"200" and c.closed and p.busy() == 0
        assert bytes(c.out).endswith(b"}")

    _go(body)


def test_an_error_answer_has_its_grace_and_no_more():
    async def body(p, clock):
        # a 408 the client does not read: closed GRACE_MS after it was written
        t0 = clock.now
        c = await _admit(p, PART, reading=False)
        await _at(p, clock, t0, p.head_ms)
        assert not c.closed and p.busy() == 1 and p.too_slow == 1
        await _at(p, clock, t0, p.head_ms + GRACE_MS - 1)
        assert not c.closed and p.busy() == 1
        await _at(p, clock, t0, p.head_ms + GRACE_MS)
        assert c.closed and not c.out and p.busy() == 0
        # after an answered error (413), what the client still sends is read until it pauses
        # PAUSE_MS, so that closing does not reset the answer on its way
        t0 = clock.now
        c = await _admit(p, b"POST /connect HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nssid=")
        assert _status(c) == b"413" and not c.closed
        for i in range(1, 4):
            await _at(p, clock, t0, i * (PAUSE_MS - 1))
            assert not c.closed
            c.feed(b"x" * 1000)
            await _settle()
            assert not c.inbox
        await _at(p, clock, t0, 3 * (PAUSE_MS - 1) + PAUSE_MS - 1)
        assert not c.closed and p.busy() == 1
        await _at(p, clock, t0, 3 * (PAUSE_MS - 1) + PAUSE_MS)
        assert c.closed and p.busy() == 0 and _status(c) == b"413"

    _go(body)


def test_a_client_that_never_pauses_after_an_error_is_still_closed():
    async def body(p, clock):
        t0 = clock.now
        c = await _admit(p, b"POST /connect HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        assert _status(c) == b"413"
        for i in range(1, 20):  # more every 50 ms, 1.5 KB each time: 8 more reads at most
            await _at(p, clock, t0, i * 50)
            if c.closed:
                break
            c.feed(b"x" * 1536)
            await _settle()
        assert c.closed and p.busy() == 0 and i == 9, i

    _go(body)


def test_a_task_that_ignores_its_cancellation_is_cancelled_again_after_the_grace():
    hits = []

    async def stuck(p, req, w):  # a handler that swallows one cancellation (a bug elsewhere)
        ev = asyncio.Event()
        try:
            await ev.wait()
        except asyncio.CancelledError:
            hits.append(p.board.ticks_ms())
        await ev.wait()

    async def body(p, clock):
        table = p.routes
        p.routes = lambda path: (stuck, None) if path == "/api/stuck" else table(path)
        t0 = clock.now
        c = await _admit(p, b"GET /api/stuck HTTP/1.1\r\n\r\n")
        await _at(p, clock, t0, p.write_ms)
        assert hits == [clock.ticks_add(t0, p.write_ms)] and not c.closed and p.busy() == 1
        await _at(p, clock, t0, p.write_ms + GRACE_MS - 1)
        assert not c.closed and p.busy() == 1
        await _at(p, clock, t0, p.write_ms + GRACE_MS)
        assert c.closed and p.busy() == 0 and not c.out

    _go(body)


def test_eviction_takes_the_oldest_waiting_connection_with_a_503():
    async def body(p, clock):
        t0 = clock.now
        conns = []
        for i in range(SLOTS):  # idle, half a head, a head with a body still to come, idle
            clock.now = clock.ticks_add(t0, 10 * i)
            sent = (b"", PART, b"POST /api/wifi HTTP/1.1\r\nContent-Length: 9\r\n\r\n{", b"")[i % 4]
            conns.append(await _admit(p, sent))
        assert p.busy() == SLOTS
        news = []
        for i in range(SLOTS):  # newcomers whose answers stay in their slots (they do not read yet)
            clock.now = clock.ticks_add(t0, 100 + i)
            news.append(await _admit(p, INFO, reading=False))
            victim = conns[i]
            assert victim.closed and _status(victim) == b"503" and b"Retry-After: 1" in victim.out
            assert all(not c.closed for c in conns[i + 1 :]) and not news[-1].closed
            assert p.evicted == i + 1 and p.refused == 0 and p.busy() == SLOTS
        await _all_answered(p, news)

    _go(body)


def test_a_request_being_answered_is_never_evicted():
    async def body(p, clock):
        t0 = clock.now
        slow = await _admit(p, INFO, reading=False)  # the oldest, being answered
        idle = []
        for i in range(1, SLOTS):
            clock.now = clock.ticks_add(t0, i)
            idle.append(await _admit(p))
        new = await _admit(p, INFO)
        assert _status(new) == b"200" and idle[0].closed and _status(idle[0]) == b"503"
        assert not slow.closed and not slow.out and p.evicted == 1
        # every slot answering: a newcomer gets a 503 at once, nobody is cut
        busy = [slow]
        for _ in range(SLOTS - 1):  # one takes the slot just freed, the others evict the idle ones
            busy.append(await _admit(p, INFO, reading=False))
        assert all(c.closed and _status(c) == b"503" for c in idle) and p.evicted == SLOTS - 1
        new = await _admit(p, INFO)
        assert new.closed and _status(new) == b"503" and p.refused == 1
        assert all(not c.closed for c in busy) and p.busy() == SLOTS
        await _all_answered(p, busy)

    _go(body)


def test_deadlines_and_eviction_across_the_tick_wrap_around():
    start = (1 << 30) - 2500  # the ESP32's ticks wrap at 2**30 ms (12.4 days)

    async def body(p, clock):
        t0 = clock.now
        c = await _admit(p, PART)
        await _at(p, clock, t0, 2499)
        assert clock.now == (1 << 30) - 1 and not c.out
        await _at(p, clock, t0, 2500)
        assert clock.now == 0 and not c.out  # wrapped: a plain `now >= until` fired here long ago
        await _at(p, clock, t0, p.head_ms - 1)
        assert not c.out and p.idle_ms() == p.head_ms - 1
        await _at(p, clock, t0, p.head_ms)
        assert _status(c) == b"408" and clock.now == p.head_ms - 2500
        c.shut()
        await _settle()
        assert p.busy() == 0
        # the oldest connection is found across the wrap too (ticks before it are "larger")
        clock.now = (1 << 30) - 20
        t1 = clock.now
        conns = []
        for i in range(SLOTS):
            clock.now = clock.ticks_add(t1, 10 * i)  # -20, -10, 0, 10
            conns.append(await _admit(p))
        await _admit(p, INFO, reading=False)
        assert conns[0].closed and not any(x.closed for x in conns[1:])
        await _admit(p, INFO, reading=False)
        assert conns[1].closed and not any(x.closed for x in conns[2:])
        # the newest ones keep their own deadlines across the wrap
        await _at(p, clock, t1, 20 + p.head_ms - 1)
        assert not conns[2].out
        await _at(p, clock, t1, 20 + p.head_ms)
        assert _status(conns[2]) == b"408" and not conns[3].out
        await _at(p, clock, t1, 30 + p.head_ms)
        assert _status(conns[3]) == b"408"

    _go(body, pf.TestClock(start))


def test_the_test_clock_does_what_the_ports_ticks_do():
    import time

    c = pf.TestClock(5)
    assert c.ticks_add((1 << 30) - 1, 1) == 0 and c.ticks_diff(0, (1 << 30) - 1) == 1
    assert c.ticks_diff((1 << 30) - 1, 0) == -1 and c.ticks_add(3, -5) == (1 << 30) - 2
    assert c.ticks_diff(1 << 29, 0) == -(1 << 29)  # half the period: the sign flips (as on the chip)
    if hasattr(time, "ticks_add"):  # MicroPython: the same arithmetic at the port's own period
        period = time.ticks_add(0, -1) + 1
        c = pf.TestClock(0, period)
        half = period // 2
        for a in (0, 1, 12345, half - 1, half, period - 1):
            for b in (0, 1, 777, half - 1, half, period - 2, period - 1):
                assert c.ticks_diff(a, b) == time.ticks_diff(a, b), (a, b)
            for d in (0, 1, 777, half - 1, -1, -777, 1 - half):  # (the port's limit: |d| < half)
                assert c.ticks_add(a, d) == time.ticks_add(a, d), (a, d)


def test_no_heap_for_a_connection_gets_come_again_and_the_portal_goes_on():
    """No heap for a new connection's stream or task (MemoryError, a portal under attack at a small
    heap): that client gets the "come again" 503 at once, its slot stays free, and the next connection
    is served (the accept loop is not restarted, no pause)."""

    async def body(p, clock):
        calls = []

        async def starved(conn):
            calls.append(1)
            if len(calls) == 1:
                raise MemoryError("memory allocation failed, allocating 360 bytes")
            return await pf.streams(conn)

        p._streams = starved
        first = await _admit(p, INFO)
        assert first.closed and _status(first) == b"503" and b"Retry-After: 1" in bytes(first.out)
        assert p.refused == 1 and p.busy() == 0
        second = await _admit(p, INFO, reading=False)
        await _all_answered(p, [second])

    _go(body)


def test_short_of_heap_the_oldest_waiting_connection_makes_room_and_newcomers_come_again():
    """Less heap than a connection and its answer need (Portal.room(), after a collection): the oldest
    connection still waiting for its request is closed with a 503 to make room, and when that is not
    enough the newcomer gets the "come again" 503 at once instead of a slot that would run out of heap
    mid-answer. Connections being answered are never cut; with heap again, the next one is served."""

    async def body(p, clock):
        idle = await _admit(p)
        busy = await _admit(p, INFO, reading=False)  # being answered
        p.room = lambda need: False
        new = await _admit(p, INFO)
        assert idle.closed and _status(idle) == b"503" and p.evicted == 1
        assert new.closed and _status(new) == b"503" and p.refused == 1
        assert not busy.closed and p.busy() == 1
        p.room = lambda need: True
        again = await _admit(p, INFO, reading=False)
        await _all_answered(p, [busy, again])

    _go(body)
