# Shared fakes and clients for the portal / DNS / Improv tests (both runtimes): a fake app controller
# with the app's exact API, a real-time clock and a clock the test moves (with the chip's wrap-around),
# an in-process connection for the portal (no socket), and tiny HTTP/DNS clients on 127.0.0.1.
import asyncio
import os
import time

from fakectl import FakeCtl  # noqa: F401  (re-exported for the tests)

import support
import vesp32
import vmachine
import vnetwork
from twomes import config, hw, identity, store

HOSTILE = "<script>alert(1)</script>&\"x'"  # 29 bytes: a valid SSID
CAFE = "Caf\u00e9 \u2615 & Co"
SPECIAL_PW = "p&%+@#$;\u00e4ssw\u00f6rd =x"
AIR = [
    {"ssid": "home", "password": "secret-pass", "rssi": -52, "join_ms": 30},
    {"ssid": HOSTILE, "password": "whatever1", "rssi": -71, "join_ms": 30},
    {"ssid": CAFE, "password": SPECIAL_PW, "rssi": -60, "join_ms": 30},
    {"ssid": "slow", "password": "slowslow1", "rssi": -83, "behavior": "timeout"},
    {"ssid": "open-net", "password": "", "rssi": -88, "join_ms": 30},
]


class RealClock:
    def ticks_ms(self):
        try:
            return time.ticks_ms()
        except AttributeError:
            return int(time.monotonic() * 1000)

    def ticks_add(self, a, b):
        try:
            return time.ticks_add(a, b)
        except AttributeError:
            return a + b

    def ticks_diff(self, a, b):
        try:
            return time.ticks_diff(a, b)
        except AttributeError:
            return a - b


class TestClock:
    """Ticks that move only when the test says so, with MicroPython's tick arithmetic: they wrap at
    `period` (the ESP32's 2**30 by default; ticks_diff is right for spans under half of it)."""

    def __init__(self, now=0, period=1 << 30):
        self.period = period
        self.now = now & (period - 1)

    def ticks_ms(self):
        return self.now

    def ticks_add(self, a, b):
        return (a + b) & (self.period - 1)

    def ticks_diff(self, a, b):
        half = self.period >> 1
        return ((a - b + half) & (self.period - 1)) - half

    def advance(self, ms):
        self.now = self.ticks_add(self.now, ms)

    async def sleep(self, seconds, stop=None):
        """asyncio.sleep on this clock: returns once the test has moved the clock `seconds` on (it
        yields to the other tasks meanwhile, no real time passes), or when `stop()` says so."""
        end = self.ticks_add(self.now, int(seconds * 1000))
        while self.ticks_diff(end, self.now) > 0 and not (stop and stop()):
            await asyncio.sleep(0)

    async def wait_for(self, aw, seconds):
        """asyncio.wait_for on this clock: `aw`'s result, or asyncio.TimeoutError (`aw` cancelled) once
        the test has moved the clock `seconds` on before `aw` finished."""
        end = self.ticks_add(self.now, int(seconds * 1000))
        task = asyncio.create_task(aw)
        try:
            while not task.done():
                if self.ticks_diff(end, self.now) <= 0:
                    raise asyncio.TimeoutError()
                await asyncio.sleep(0)
            return await task
        finally:
            if not task.done():
                task.cancel()


class Conn:
    """An accepted connection without a socket, for the portal's admit(): the test plays the client
    (feed / shut / read_answers) and sees what the portal did (out: what it sent; closed). Its streams
    come from streams(conn), the Portal's `streams` argument. A client that does not read (reading =
    False) keeps the portal's drain() waiting, as a full send buffer does."""

    def __init__(self, data=b"", reading=True):
        self.inbox = bytearray(data)  # sent by the client, not yet read by the portal
        self.eof = False  # the client shut its side
        self.reading = reading
        self.out = bytearray()  # what reached the client
        self.unsent = bytearray()  # written by the portal, waiting for drain()
        self.closed = False
        self._ev = asyncio.Event()

    # the client's side
    def feed(self, data):
        self.inbox += data
        self._ev.set()

    def shut(self):
        self.eof = True
        self._ev.set()

    def read_answers(self):
        self.reading = True
        self._ev.set()

    # the socket's side (what hw.sock_readinto and the portal call)
    def setblocking(self, flag):
        pass

    def send(self, data):
        if self.closed:
            raise OSError(32, "closed")
        self.out += data  # (small answers: the send buffer takes them whole)
        return len(data)

    def recv_into(self, buf):
        if not self.inbox and not self.eof and not self.closed:
            raise OSError(11, "nothing yet")  # EAGAIN, as a non-blocking socket (CPython)
        n = min(len(buf), len(self.inbox))
        buf[:n] = self.inbox[:n]
        self.inbox = self.inbox[n:]
        return n

    def readinto(self, buf):  # MicroPython's: None when nothing is there yet
        try:
            return self.recv_into(buf)
        except OSError:
            return None

    def close(self):
        if not self.closed and self.reading:
            self.out += self.unsent  # the stack still sends what was written
        self.closed = True
        self._ev.set()


class _Stream:
    """The asyncio stream over a Conn (reader and writer in one, as MicroPython's Stream)."""

    def __init__(self, conn):
        self.c = conn

    async def _wait(self):
        self.c._ev.clear()
        await self.c._ev.wait()

    async def read(self, n):
        c = self.c
        while not c.inbox and not c.eof and not c.closed:
            await self._wait()
        got = bytes(c.inbox[:n])
        c.inbox = c.inbox[len(got) :]
        return got

    async def readinto(self, mv):
        got = await self.read(len(mv))
        mv[: len(got)] = got
        return len(got)

    def write(self, data):
        self.c.unsent += data

    async def drain(self):
        c = self.c
        while not c.reading and not c.closed:
            await self._wait()
        if c.closed:
            raise OSError(32, "closed")
        c.out += c.unsent
        c.unsent = bytearray()

    def close(self):
        self.c.close()

    async def wait_closed(self):
        pass


async def streams(conn):
    s = _Stream(conn)
    return s, s


def rand_port():
    b = os.urandom(2)
    return 20000 + (b[0] << 8 | b[1]) % 30000


def make(air=None, clock=None, **cfgvals):
    """(board, ident, cfg, ctl) on a fresh simulated board (on real time, or on `clock`)."""
    support.new_board(air=AIR if air is None else air)
    values = {"portal_port": rand_port(), "dns_port": rand_port()}
    values.update(cfgvals)
    cfg = config.defaults()
    config.update(cfg, values)
    board = hw.Board(cfg, vmachine, vnetwork, vesp32, clock=clock or RealClock())
    st = store.Store(vesp32.NVS("twomes"))
    ident = identity.load(st, board.mac(), cfg, os.urandom)
    return board, ident, cfg, FakeCtl(board, ident, cfg=cfg)


async def start_portal(air=None, slots=None, dns=False, **cfgvals):
    """A portal serving on 127.0.0.1 with the real controller (FakeCtl), its server task supervised
    as in setup mode (and the captive DNS with `dns`). Stop it with stop_portal()."""
    from twomes.ap import controller
    from twomes.ap import dns as ap_dns
    from twomes.ap.portal import SLOTS, Portal

    for _ in range(10):
        board, ident, cfg, ctl = make(air, **cfgvals)
        p = Portal(board, ident, cfg, ctl, slots or SLOTS)
        try:
            await p.start()
        except OSError:  # port taken: pick others
            continue
        p.tasks = [asyncio.create_task(controller.supervise("portal", p.serve))]
        if dns:
            p.tasks.append(asyncio.create_task(controller.supervise("dns", ap_dns.serve, p.ip, cfg.dns_port)))
            await asyncio.sleep(0.05)
        return p
    raise AssertionError("no free ports")


async def stop_portal(p):
    for t in p.tasks + [p.ctl._job]:
        if t is not None:
            t.cancel()
    for t in p.tasks:
        try:
            await t
        except BaseException:  # noqa: BLE001 - cancelled
            pass
    await p.stop()


# ---- HTTP client ---------------------------------------------------------------------------------
class Resp:
    def __init__(self, raw):
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split(" ")[1]) if lines and lines[0].startswith("HTTP/") else 0
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.text = self.body.decode()

    def json(self):
        import json

        return json.loads(self.body)


async def request(port, raw, timeout=5.0):
    """Send raw bytes, read the answer to the end (bounded); returns Resp."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    data = b""
    try:
        w.write(raw)
        await w.drain()
        while len(data) < 200000:
            try:
                chunk = await asyncio.wait_for(r.read(4096), timeout)
            except OSError:  # reset after the answer
                break
            if not chunk:
                break
            data += chunk
    finally:
        w.close()
        try:
            await w.wait_closed()
        except OSError:
            pass
    return Resp(data)


def host_of(p):
    return "127.0.0.1:%d" % p.cfg.portal_port


async def get(p, path, host=None, method="GET", extra=""):
    raw = "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: test\r\n%s\r\n" % (
        method,
        path,
        host or host_of(p),
        extra,
    )
    return await request(p.cfg.portal_port, raw.encode())


async def post(p, path, body, ctype="application/x-www-form-urlencoded", extra=""):
    if isinstance(body, str):
        body = body.encode()
    raw = "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
        path,
        host_of(p),
        ctype,
        len(body),
        extra,
    )
    return await request(p.cfg.portal_port, raw.encode() + body)


def quote(s):
    """application/x-www-form-urlencoded, as browsers send it."""
    out = []
    for b in s.encode():
        c = chr(b)
        if b < 128 and (c.isalpha() or c.isdigit() or c in "-_.*"):
            out.append(c)
        elif c == " ":
            out.append("+")
        else:
            out.append("%%%02X" % b)
    return "".join(out)


def form(**fields):
    return "&".join(quote(k) + "=" + quote(v) for k, v in fields.items())


def status(p):
    """What GET /api/status answers."""
    return p.ctl.status()


async def wait_idle(p, max_s=5.0):
    """Until the portal's credential test is over."""
    for _ in range(int(max_s * 50)):
        if not status(p)["busy"]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the credential test did not finish")


# ---- DNS client ----------------------------------------------------------------------------------
def dns_query(name, qtype=1, qid=0x1234, rd=True):
    q = bytearray([qid >> 8, qid & 0xFF, 0x01 if rd else 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0])
    for label in name.split("."):
        q.append(len(label))
        q.extend(label.encode())
    q.extend(bytes([0, qtype >> 8, qtype & 0xFF, 0, 1]))
    return bytes(q)


async def udp_ask(port, packet, timeout=1.0):
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        s.sendto(packet, socket.getaddrinfo("127.0.0.1", port, 0, socket.SOCK_DGRAM)[0][-1])
        for _ in range(int(timeout * 100)):
            try:
                return s.recvfrom(1024)[0]
            except OSError:
                await asyncio.sleep(0.01)
        return None
    finally:
        s.close()
