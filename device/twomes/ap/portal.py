# The setup access point's web server: the AP itself, the listening socket, a fixed number of connection
# slots (bounded admission), per-connection deadlines, and the route table. Phones' captive-portal
# probes (any foreign Host) get a 302 to the form, so the setup page pops up by itself; only a
# deliberate POST (the form or the app API) acts, through the controller.
#
# Limits (docs/setup-mode.md): _SLOTS connections at once, each with its own _LINE buffer (the bound of
# the request line: 414, and of a header the portal reads: 431), head <= 8 KB (431), body <= 1024 bytes (413), head within head_ms of the connection (408), body within
# body_ms of the head (408), the answer within write_ms. A connection beyond the slots closes the
# oldest one still waiting for its request (idle or slow), or, when every slot is answering, gets a
# 503 at once. One request per connection (Connection: close). A connection that has sent nothing yet
# (a browser's spare connection, an idle client) is held by the accept loop without a task: its socket
# and slot only; it gets its task (stream, coroutines) when its first bytes are in.
import asyncio
import gc
import json
import socket

from micropython import const

from twomes import hw
from twomes.ap import api, form, pages
from twomes.ap.creds import shown
from twomes.ap.httpd import HTML, JSON, TEXT, HttpError, Request, read_body, read_head, send
from twomes.log import log

SLOTS = const(4)  # connections served at once (4 x 0.5 KB of buffers, and their request state)
# a slot's buffer: one line of a head at a time (phones' heads are ~0.4-1 KB, their longest lines the
# User-Agent and Accept headers, which the portal skips), the first bytes of a body
_LINE = const(512)
_DRAIN = const(1536)  # what a refused connection sent is read (and dropped) this much at most
_HEAD_MS = const(5000)
_BODY_MS = const(5000)
_WRITE_MS = const(10000)
_BACKLOG = const(8)  # connections the stack holds until accepted (beyond: SYNs dropped, clients wait 1-3 s)
# heap a new connection needs before it gets a slot: its task, stream and request (~1.1 KB on the 64-bit
# unix port) and room for its answer; below it (after a collection) the connection gets the "come
# again" 503 at once instead of a slot that would run out of heap mid-answer
_ROOM = const(2048)
_ACCEPT_ROOM = const(512)  # for accept()'s socket object; below it connections wait in the backlog
_SCRATCH = const(64)  # what a refused connection sent is read (and dropped) this much at a time
_GRACE_MS = const(1000)  # an error answer, or what the client still sends after one (200 ms of it)
_FREE = const(0)
_HEAD = const(1)  # waiting for / reading the head (idle or slow clients are here)
_BODY = const(2)
_ANSWER = const(3)
_TOO_SLOW = const(408)  # Slot.why: its deadline passed while reading (answered 408)
_GONE = const(1)  # Slot.why: past its answer's time, or the portal stops (closed, no answer)
_EVICTED = const(2)  # Slot.why: closed for a newer connection (with a 503)
# the answer of a connection that gets no slot: no body (so it is right for HEAD too, whatever the
# request was), and browsers load the page again in a second
_REFUSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nCache-Control: no-store\r\n"
    b"Retry-After: 1\r\nRefresh: 1\r\nContent-Length: 0\r\n\r\n"
)
# the 408 of a connection that sent nothing within _HEAD_MS (as send() writes an HttpError's answer)
_SILENT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nCache-Control: no-store\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"
    b"Content-Length: 21\r\n\r\n408 request too slow\n"
)
_BUSY = b'<meta http-equiv="refresh" content="2"><p>Busy, one moment&hellip;</p>'


class Slot:
    """One connection's place: its buffer and request, its task, its phase and deadline."""

    def __init__(self):
        self.buf = bytearray(_LINE)
        self.req = Request()
        self.phase = _FREE
        self.task = None  # None while it waits for its first bytes (held by the accept loop)
        self.sock = None  # the connection's socket (for a 503 written at once when it is evicted)
        self.since = 0  # ticks of the connection
        self.until = 0  # ticks of its current deadline
        self.why = 0


class Portal:
    def __init__(self, board, ident, cfg, ctl, slots=SLOTS, streams=None):
        self.board = board  # its ticks_ms/ticks_add/ticks_diff are the clock of every deadline here
        self._streams = streams or hw.stream  # (reader, writer) of an accepted connection (tests: in-process)
        self.ident = ident
        self.cfg = cfg
        self.ctl = ctl
        self.slots = [Slot() for _ in range(slots)]  # allocated first, before the heap fragments
        self.head_ms = _HEAD_MS  # (tests shorten these)
        self.body_ms = _BODY_MS
        self.write_ms = _WRITE_MS
        self.ip = self.origin = ""
        self.hosts = ()
        self.evicted = self.refused = self.too_slow = 0  # counts, for the log and the tests
        self._scratch = bytearray(_SCRATCH)  # what a refused or evicted connection sent, read and dropped
        self._sock = None
        self._last = board.ticks_ms()

    def routes(self, path):
        """The route table: (GET/HEAD handler, POST handler) of `path`, or None (any other GET: the
        form, captive). Code, not a dict of tuples held for the whole of setup mode."""
        if path == "/":
            return pages.form, None
        if path == "/result":
            return pages.result, None
        if path == "/rescan":
            return pages.rescan, None
        if path == "/connect":
            return None, form.post
        if path == "/api/info":
            return api.info, None
        if path == "/api/status":
            return api.status, None
        if path == "/api/networks":
            return api.networks, None
        if path == "/api/wifi":
            return None, api.wifi
        return None

    # ---- up and down ------------------------------------------------------------------------------
    async def start(self):
        """Access point up and the HTTP socket bound (errors raise here, with the AP down again)."""
        board = self.board
        ap = board.ap
        name = self.ident.name
        ap.active(True)
        if self.cfg.ap_open:
            ap.config(essid=name, authmode=getattr(board.network, "AUTH_OPEN", 0))
        else:
            ap.config(
                essid=name,
                password=self.ident.ap_password,
                authmode=getattr(board.network, "AUTH_WPA2_PSK", 3),
            )
        ip = ap.ifconfig()[0]  # 192.168.4.1 on the chip; loopback on the virtual board
        port = self.cfg.portal_port or 80
        host = ip if port == 80 else "%s:%d" % (ip, port)
        self.ip = ip
        self.origin = "http://" + host
        self.hosts = (host, ip) if port == 80 else (host,)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(socket.getaddrinfo(ip, port, 0, socket.SOCK_STREAM)[0][-1])
            s.listen(_BACKLOG)
            s.setblocking(False)
        except BaseException:
            s.close()
            try:
                ap.active(False)
            except OSError:
                pass
            raise
        self._sock = s
        self._last = board.ticks_ms()
        log(
            "portal",
            "access point %r up (%s), page %s/" % (name, "open" if self.cfg.ap_open else "WPA2", self.origin),
        )

    async def stop(self):
        """Socket closed, connections cancelled (their sockets closed), AP down."""
        s = self._sock
        self._sock = None
        if s is not None:
            s.close()
        for slot in self.slots:
            if slot.task is not None:
                slot.why = _GONE
                slot.task.cancel()
            elif slot.phase != _FREE:  # waiting for its first bytes: no task to end
                self._release(slot, True)
        for _ in range(50):  # let the cancelled handlers run their `finally` (sockets closed)
            if not self.busy():
                break
            await asyncio.sleep(0.01)
        try:
            self.board.ap.active(False)
        except OSError:
            pass
        log("portal", "access point down")

    def busy(self):
        """Connections in the slots."""
        n = 0
        for slot in self.slots:
            if slot.phase != _FREE:
                n += 1
        return n

    def idle_ms(self):
        """Time since the last request was read."""
        return self.board.ticks_diff(self.board.ticks_ms(), self._last)

    # ---- admission and deadlines (one task, supervised by the controller) -------------------------
    async def serve(self):
        """Accept connections into the slots and hold each one to its deadlines, until cancelled. If it
        fails, the controller starts it again: the listening socket and the connections stay."""
        while self._sock is not None:
            conn = None
            try:
                # accept() allocates the socket object after the stack's accept: without heap for it the
                # connection would be lost, unanswered. Short of that, it waits in the backlog a turn
                if self.room(_ACCEPT_ROOM):
                    conn, _ = self._sock.accept()
                    conn.setblocking(False)  # (never a read that waits: this loop serves them all)
            except OSError:  # nothing waiting (EAGAIN)
                pass
            except MemoryError:  # no heap for the socket object: the next turn tries again
                pass
            if conn is not None:
                try:
                    await self.admit(conn)
                except MemoryError:  # (no heap even for its admission: "come again" at once)
                    self.refused += 1
                    self._refuse(conn)
                    conn.close()
            self.tick()
            await hw.sleep_ms(0 if conn is not None else 20)  # (allocates nothing)

    async def admit(self, conn):
        """Give an accepted connection a slot and start its request (serve() calls this)."""
        b = self.board
        slot = self._free()
        room = self.room(_ROOM)
        if slot is None or not room:
            # the oldest connection still waiting for its request makes room, a slot or heap (idle
            # spare connections of browsers, slow clients); connections being answered are never cut
            victim = None
            for s in self.slots:
                if (s.phase == _HEAD or s.phase == _BODY) and not s.why:
                    if victim is None or b.ticks_diff(s.since, victim.since) < 0:
                        victim = s
            if victim is not None:
                self._refuse(victim.sock)
                self.evicted += 1
                if victim.task is None:  # it sent nothing yet: no task to end
                    self._release(victim, True)
                else:
                    victim.why = _EVICTED
                    victim.task.cancel()  # pyright: ignore[reportOptionalMemberAccess] - set in this branch
                    for _ in range(3):  # its `finally` frees the slot when it runs
                        await asyncio.sleep(0)
                        if victim.phase == _FREE:
                            break
                slot = self._free()
                room = self.room(_ROOM)
        if slot is None or not room:  # no slot, or no heap to answer it: "come again" at once
            self.refused += 1
            try:
                conn.setblocking(False)
            except OSError:
                pass
            self._refuse(conn)
            conn.close()
            return
        now = b.ticks_ms()
        slot.phase = _HEAD
        slot.since = now
        slot.until = b.ticks_add(now, self.head_ms)
        slot.why = 0
        slot.req.reset()
        slot.sock = conn
        try:
            conn.setblocking(False)
        except OSError:
            pass
        self.tick()  # what it sent already starts its request at once

    def room(self, need):
        """Whether `need` bytes of heap are free, after a collection if garbage holds them (CPython,
        whose mem_free is -1: always)."""
        free = hw.mem_free()
        if 0 <= free < need:
            gc.collect()
            free = hw.mem_free()
        return free < 0 or free >= need

    def _free(self):
        for slot in self.slots:
            if slot.phase == _FREE:
                return slot
        return None

    def tick(self):
        """Hold every connection to its deadline at the board's ticks now: cancel the tasks of those
        past it (408 while reading, closed otherwise). serve() calls this after every accept and every
        20 ms; tests call it on a board clock they move themselves. A deadline fires at its tick. It
        also looks at the connections waiting for their first bytes (admit() calls it too): those
        that sent some get their task, those that hang up free their slots."""
        b = self.board
        now = b.ticks_ms()
        for slot in self.slots:
            if slot.phase != _FREE and slot.task is None:
                # waiting for its first bytes (no task; nothing is allocated while it stays silent):
                # what it sent now starts its request (its task, which makes its stream); one the
                # client closed frees its slot; one silent until its deadline gets the 408
                n = hw.sock_readinto(slot.sock, slot.buf)
                if n:
                    try:
                        slot.task = asyncio.create_task(self._conn(slot, n))  # pyright: ignore[reportAttributeAccessIssue]
                        continue
                    except MemoryError:
                        # no heap for its task just now: "come again" at once, as when every slot
                        # is taken (_REFUSE is a constant), and the accept loop goes on
                        self.refused += 1
                        self._refuse(slot.sock)
                elif n is None:
                    if b.ticks_diff(now, slot.until) < 0:
                        continue
                    self.too_slow += 1
                    self._refuse(slot.sock, _SILENT)
                self._release(slot, True)  # (closed before it sent anything: nothing to answer)
            elif slot.phase != _FREE and b.ticks_diff(now, slot.until) >= 0:
                if not slot.why:
                    slot.why = _TOO_SLOW if slot.phase != _ANSWER else _GONE
                    if slot.why == _TOO_SLOW:
                        self.too_slow += 1
                else:
                    slot.why = _GONE  # past the grace of its answer too: closed
                slot.until = b.ticks_add(now, _GRACE_MS)
                slot.task.cancel()  # pyright: ignore[reportAttributeAccessIssue, reportOptionalMemberAccess]

    # ---- one connection = one request -------------------------------------------------------------
    async def _conn(self, slot, n):
        """The request of a connection whose first `n` bytes are in its slot's buffer."""
        b = self.board
        req = slot.req
        sock = slot.sock
        w = None
        try:
            try:
                # (pyright: the stubs' StreamReader has no writer calls; MicroPython's Stream is both)
                reader, w = await self._streams(sock)
                n, pos = await read_head(reader, slot.buf, req, n)
                if req.length:
                    slot.phase = _BODY
                    slot.until = b.ticks_add(b.ticks_ms(), self.body_ms)
                    await read_body(reader, slot.buf, req, n, pos)
            except asyncio.CancelledError:
                if slot.why == _EVICTED:  # answered already (_refuse): closed
                    return
                if slot.why != _TOO_SLOW:
                    raise
                raise HttpError(408, "request too slow") from None
            slot.phase = _ANSWER
            self._last = now = b.ticks_ms()
            slot.until = b.ticks_add(now, self.write_ms)
            await self._route(req, w)
            await w.drain()  # pyright: ignore[reportAttributeAccessIssue, reportOptionalMemberAccess]
        except HttpError as e:
            status = e.args[0]
            if status and not req.answered:
                slot.phase = _ANSWER  # answering: never evicted (one answer per connection)
                slot.why = 0
                slot.until = b.ticks_add(b.ticks_ms(), _GRACE_MS)
                if req.path[:5] == "/api/":
                    body = json.dumps({"error": e.args[1]}).encode()
                    ctype = JSON
                else:
                    body = ("%d %s\n" % (status, e.args[1])).encode()
                    ctype = TEXT
                try:
                    send(w, status, ctype, body, req.head)
                    await w.drain()  # pyright: ignore[reportAttributeAccessIssue, reportOptionalMemberAccess]
                    # what the client still sends (a refused head or body): closing before it is in
                    # would reset the answer on its way; read until it pauses for 100 ms (12 KB at most)
                    mv = memoryview(slot.buf)
                    for _ in range(12288 // _LINE):
                        slot.until = b.ticks_add(b.ticks_ms(), 100)
                        if not await hw.readinto(reader, mv):
                            break
                except BaseException:  # noqa: BLE001 - best effort, for its grace at most
                    pass
        except MemoryError:
            # no heap for this answer just now: the phone gets a page that reloads itself in a moment
            # (an error page would end its captive-portal window)
            slot.phase = _ANSWER
            try:
                if w is None:  # no heap for its stream: "come again" at once (_REFUSE is a constant)
                    self.refused += 1
                    self._refuse(sock)
                elif req.answered:  # mid-page: browsers follow a refresh in the body too
                    w.write(_BUSY)  # pyright: ignore[reportAttributeAccessIssue, reportOptionalMemberAccess]
                elif req.path[:5] == "/api/":
                    send(w, 503, JSON, b'{"error": "busy, try again"}', req.head)
                else:
                    send(w, 503, HTML, _BUSY, req.head)
                await w.drain()  # pyright: ignore[reportAttributeAccessIssue, reportOptionalMemberAccess]
                log("portal", "out of memory for %s: asked to come again" % shown(req.path))
            except BaseException:  # noqa: BLE001 - best effort, for its grace at most
                pass
        except Exception as e:  # noqa: BLE001 - request boundary: one bad client never stops the portal
            log("portal", "request failed: %s" % type(e).__name__)
        finally:
            try:
                await asyncio.sleep(0)  # (the answer's last bytes leave)
                for _ in range(4):  # what the client still sent, unread: closing with it would reset
                    if not slot.sock or not hw.sock_readinto(slot.sock, slot.buf):  # the answer
                        break
                if w is None:
                    sock.close()
                else:
                    w.close()  # pyright: ignore[reportAttributeAccessIssue, reportOptionalMemberAccess]
            except BaseException:  # noqa: BLE001 - the peer may already be gone
                pass
            if slot.task is asyncio.current_task():
                self._release(slot)  # the slot is free before we wait for the close
            try:
                if w is not None:
                    await w.wait_closed()  # pyright: ignore[reportAttributeAccessIssue, reportOptionalMemberAccess]
            except BaseException:  # noqa: BLE001 - the peer may already be gone; or we are cancelled
                pass

    def _release(self, slot, close=False):
        """Free the slot (`close`: and close its socket: a connection without a task)."""
        if close:
            try:
                slot.sock.close()  # pyright: ignore[reportOptionalMemberAccess] - a taken slot has one
            except OSError:
                pass
        slot.task = slot.sock = None
        slot.phase = _FREE
        slot.why = 0
        slot.req.reset()  # what it read (path, headers, body) is not kept: small pieces all over the heap

    def _refuse(self, sock, data=_REFUSE):
        """A whole answer (by default the 503) on a connection that gets no slot or no task, at once
        (nothing waits for it), after reading what it sent already: closing with that unread would
        reset the answer on its way."""
        if sock is None:
            return
        for _ in range(_DRAIN // _SCRATCH):
            if hw.sock_readinto(sock, self._scratch) != _SCRATCH:
                break
        try:
            sock.send(data)
        except OSError:
            pass

    async def _route(self, req, w):
        path = req.path
        method = req.method
        api_path = path[:5] == "/api/"
        if method != "GET" and method != "HEAD" and method != "POST":
            raise HttpError(405, "method not allowed")
        if not api_path and req.host not in self.hosts:
            req.answered = True  # probes (foreign names): a redirect to the form, nothing else
            send(w, 302, where=self.origin + "/")
            return
        r = self.routes(path)
        if method == "POST":
            if req.origin is not None and req.origin != "null" and req.origin != self.origin:
                raise HttpError(403, "foreign origin")
            h = r[1] if r else None
            if h is None:
                raise HttpError(404, "nothing to post here")
        else:
            h = r[0] if r else None
            if h is None:
                if api_path or path == "/favicon.ico":
                    raise HttpError(404, "not found")
                req.answered = True  # the probes' URLs on our own address, any other path: the form
                send(w, 302, where=self.origin + "/")
                return
        await h(self, req, w)
