# A small asyncio HTTP/1.1 client for the device: one request per connection; https verified against
# the deployed CA by the caller's TLS context, the server's name in every connection (twomes/hw.py
# connect); bodies streamed with readinto() into the caller's buffer
# (a firmware image never sits in RAM). Whatever a server sends, the caller gets a Response or an
# errors.Error - never a crash:
#   - time: every request has ONE watchdog task that bounds the silence (timeout_s) and the whole
#     request (deadline_s: sending - the TCP connect and TLS handshake complete in it - head and body)
#     - no task or closure per read;
#   - size: the head must fit the caller's 1 KB head buffer, JSON bodies are bounded in size, nesting
#     depth and number of values BEFORE they are parsed (a 2 KB "[[[[..." must not exhaust the heap);
#   - errors: timeouts, resets, refused connections, TLS failures, garbage become Error(0, reason).
# The streaming path reads what the socket already holds without waiting or allocating (hw.read_now)
# and waits on the socket only when it is empty.
import asyncio
import json

from micropython import const

from twomes import hw
from twomes.errors import Error
from twomes.log import printable

_NET = const(0)  # errors.Error status: no (readable) answer
_HEAD_MAX = const(1024)  # status line + headers: the size of the app's preallocated head buffer
_JSON_DEPTH = const(8)  # nesting of objects/arrays in an answer we parse
_JSON_VALUES = const(256)  # values (array items and object members) in an answer we parse
# a read that finds data ready does not wait; while data keeps coming, the other tasks get a turn
# every _TURN_MS (looked at every _LOOK-th read, a power of two: one clock call per 16 reads; the
# turn's await allocates a coroutine, 160 B)
_TURN_MS = const(20)
_LOOK = const(16)
# the response headers anybody reads: their names as compared (lower case) and as keys in .headers;
# the others are skipped (Content-Length is .length)
_KEEP = const((b"content-range", b"date", b"transfer-encoding", b"x-twomes-firmware-api", b"etag"))
_KEYS = const(("content-range", "date", "transfer-encoding", "x-twomes-firmware-api", "etag"))


def split_url(url):
    """'https://host:port/path' -> (https?, host, port, at): url[at:] is the path (empty: "/"), the
    authority (host[:port], as the Host header says it) runs from after the scheme to `at`. The host is
    the only new string."""
    if url.startswith("https://"):
        tls, a, port = True, 8, 443
    elif url.startswith("http://"):
        tls, a, port = False, 7, 80
    else:
        raise ValueError("URL must start with http:// or https://")
    if len(url.encode()) != len(url):
        raise ValueError("URL must be ASCII (percent-encoded)")
    at = url.find("/", a)
    if at < 0:
        at = len(url)
    if url.startswith("[", a):  # [::1]:8000
        end = url.find("]", a, at)
        if end < 0:
            raise ValueError("bad IPv6 host")
        c = end + 1 if end + 1 < at else -1
        a += 1
    else:
        end = c = url.rfind(":", a, at)
        if c < 0:
            end = at
    if c >= 0:
        if not url.startswith(":", c):
            raise ValueError("bad port")
        port = int(url[c + 1 : at])
    if end <= a or not 0 < port < 65536:
        raise ValueError("URL has no host")
    return tls, url[a:end], port, at


def check_json(buf, n):
    """Raise Error when the first n bytes of buf nest deeper than _JSON_DEPTH or hold more than
    _JSON_VALUES values: json.loads would build all of it in the heap at once."""
    depth = values = 0
    instr = esc = False
    for i in range(n):
        c = buf[i]
        if instr:
            if esc:
                esc = False
            elif c == 92:  # backslash
                esc = True
            elif c == 34:
                instr = False
        elif c == 34:  # "
            instr = True
        elif c == 91 or c == 123:  # [ {
            depth += 1
            values += 1
            if depth > _JSON_DEPTH:
                raise Error(_NET, "answer nested too deeply")
        elif c == 93 or c == 125:  # ] }
            depth -= 1
        elif c == 44:  # ,
            values += 1
            if values > _JSON_VALUES:
                raise Error(_NET, "answer has too many values")


class Response:
    """One request and its answer: status, the headers in _KEEP, and the body read in bounded pieces.
    request() makes it (connected, request sent, head read); the caller closes it (in a finally).

    One object per request and one watchdog task, nothing per read. The watchdog bounds the silence
    (no read for idle ms) and the whole request (deadline): when the time is up while the request's
    task waits inside this module, it cancels that task and the wait raises Error(_NET); when the caller
    is elsewhere, the next wait raises it. (Eleven attributes: MicroPython's table for 11 and 12 is a
    block more than for ten, for a 13th four.)"""

    def __init__(self, st, head, clk, idle_ms, total_ms):
        self._st = st  # the connection (twomes.hw: a stream)
        self._head = head  # preallocated once by the app: no 1 KB allocation per request
        self._rest = 0  # body bytes that came with the head, at the head buffer's end
        self.status = 0
        self.headers = {}
        self.length = None  # Content-Length, or None
        self._left = None  # body bytes still to read (None: until close)
        # reads so far (and turns taken): at a multiple of _LOOK, read_now() looks whether the other
        # tasks' turn is due; the watchdog takes a change as a sign of life
        self._reads = 1
        self._turned = hw.ticks_ms()  # when the other tasks last had a turn
        # 0: the request's task is elsewhere, 1: it waits in this module (the watchdog may cancel it),
        # a str: the time is up, why
        self._w = 0
        self._dog = asyncio.create_task(self._watch(clk, idle_ms, total_ms, asyncio.current_task()))

    async def _watch(self, clk, idle, until, task):
        """The watchdog task: wakes when the time could be up (and at least once a second: a read since
        the last look starts the silence again, so it lasts idle ms to 1 s more)."""
        since = clk.ticks_ms()
        until = clk.ticks_add(since, until)
        seen = 1
        while True:
            now = clk.ticks_ms()
            if self._reads != seen:
                seen = self._reads
                since = now
            left = clk.ticks_diff(until, now)
            if left > 0:
                left = min(left, idle - clk.ticks_diff(now, since), 1000)
                if left > 0:
                    await hw.sleep_ms(left)
                    continue
                since = None  # silent too long
            inside = self._w == 1
            self._w = "request took too long" if since is not None else "timeout"
            if inside:
                task.cancel()
            return

    async def _go(self, n, body):
        """request()'s awaitable: send the request head (the first n bytes of the head buffer) and
        body, read the answer's head into the head buffer -> self. Closes the connection when it fails."""
        self._w = 1  # everything awaited here is this module's
        st = self._st
        try:
            await hw.write(st, memoryview(self._head)[:n])
            if body:
                await hw.write(st, body)
                body = None
            # the answer's head, up to the empty line, into the head buffer (parsed where it lies)
            got = 0
            while True:
                if got >= len(self._head):
                    raise Error(_NET, "response headers too large")
                mv = memoryview(self._head)[got:]
                n = hw.read_now(st, mv)
                while n is None:
                    n = await hw.wait_read(st, mv)
                if not n:
                    raise Error(_NET, "connection closed in headers")
                self._reads += 1
                end = self._head.find(b"\r\n\r\n", got - 3 if got > 3 else 0, got + n)
                got += n
                if end >= 0:
                    break
            self._parse(end, got)
        except BaseException as e:
            self._close()
            raise self._failed(e)
        if self._w == 1:
            self._w = 0
        return self

    def _failed(self, e):
        """The exception to raise for e, met while waiting in this module: the watchdog's cancel is
        Error(_NET) with its reason, a socket or TLS failure Error(_NET), anything else itself."""
        if self._w == 1:
            self._w = 0
        w = self._w
        if isinstance(e, asyncio.CancelledError):
            if not isinstance(w, str):
                return e  # not ours: the app is restarting
            hw.uncancel(asyncio.current_task())
            return Error(_NET, w)
        if isinstance(e, (OSError, ValueError)):  # MicroPython's TLS says ValueError
            return _io_error(e, "connection error")
        return e

    def _parse(self, i, end):
        """The head in the head buffer: status line and headers up to i (the empty line); only the
        headers kept are decoded. The body bytes that came with it move to the buffer's end."""
        head = self._head
        if not head.startswith(b"HTTP/1.") or i < 12 or head[8] != 32:
            raise Error(_NET, "not an HTTP response")
        st = 0
        for k in range(9, 12):
            c = head[k] - 48
            if not 0 <= c <= 9:
                raise Error(_NET, "bad HTTP status")
            st = st * 10 + c
        if not 100 <= st <= 599 or head[12] not in b" \r":
            raise Error(_NET, "bad HTTP status")
        self.status = st
        mv = memoryview(head)
        eol = head.find(b"\r\n", 0, i + 2)
        try:
            while eol < i:
                pos = eol + 2
                eol = head.find(b"\r\n", pos, i + 2)
                c = head.find(b":", pos, eol)
                if c < 0:
                    continue  # no colon: not a header we keep
                a, b = _strip(head, c + 1, eol)
                if _is(head, pos, c, b"content-length"):
                    self.length = self._left = _int(head, a, b)
                    continue
                for k in range(len(_KEEP)):
                    if _is(head, pos, c, _KEEP[k]):
                        self.headers[_KEYS[k]] = str(mv[a:b], "utf-8")
        except UnicodeError:
            raise Error(_NET, "response headers are not text")
        n = end - i - 4
        if n:
            head[len(head) - n :] = mv[i + 4 : end]
        self._rest = n

    def read_now(self, mv):
        """Body bytes already received, into mv, without waiting and without allocating: their
        count, 0 at the end of the body, or None when the caller must await readinto() (nothing here
        yet - or the other tasks' turn: every _TURN_MS of a long download that await lets them run).
        (Two small Python frames per read: MicroPython puts a frame whose locals, stack and exception
        handlers exceed 11 words on the heap at every call, so the socket's exceptions are caught in
        hw.read_now, a frame of its own.)"""
        if self._reads & (_LOOK - 1) and not self._rest:
            left = self._left
            if left is not None and left > len(mv):  # not the body's last piece
                self._reads += 1
                n = hw.read_now(self._st, mv)
                if n:
                    self._left = left - n
                    return n
                if n is None:
                    return None
                raise self._short()  # closed before the end of the body
        return self._read_now(mv)

    def _read_now(self, mv):
        """read_now() at the edges: the look at the clock for the turn, the body's last piece, its end,
        the bytes in the head buffer."""
        if self._turn_due():
            return None  # readinto() takes the turn (and counts it)
        self._reads += 1
        left = self._left
        if left is not None and left < len(mv):
            if not left:
                return 0
            mv = mv[:left]  # the last piece of the body only
        if self._rest:
            return self._from_head(mv)
        n = hw.read_now(self._st, mv)
        if n is None:
            return None
        if not n:
            if left:
                raise self._short()
            return 0
        if left is not None:
            self._left = left - n
        return n

    def _from_head(self, mv):
        """Body bytes that came with the head (at the head buffer's end), into mv."""
        n = min(len(mv), self._rest)
        i = len(self._head) - self._rest
        mv[:n] = memoryview(self._head)[i : i + n]
        self._rest -= n
        if self._left is not None:
            self._left -= n
        return n

    def _short(self):
        # (only with a Content-Length: length and left are ints here)
        return Error(_NET, "connection closed after %d of %d bytes" % (self.length - self._left, self.length))  # pyright: ignore[reportOperatorIssue]

    def readinto(self, mv):
        """-> an awaitable: up to len(mv) body bytes read into mv; 0 at the end of the body. (A function
        that returns the one coroutine the case needs - bytes already here, the turn to the other tasks,
        the wait for an empty socket - not a coroutine around them; read_now first where allocation
        matters.)"""
        n = self.read_now(mv)
        if n is not None:
            return _now(n)
        if self._turn_due():
            return self._turn(mv)
        return self._wait(mv)

    def _turn_due(self):
        return not self._reads & (_LOOK - 1) and hw.ticks_diff(hw.ticks_ms(), self._turned) >= _TURN_MS

    async def _turn(self, mv):
        """readinto() when the other tasks' turn is due: they run, then data may be here."""
        await hw.sleep_ms(0)
        self._turned = hw.ticks_ms()
        self._reads += 1
        n = self.read_now(mv)
        return n if n is not None else await self._wait(mv)

    async def _wait(self, mv):
        """readinto() when the socket is empty: wait for it within the request's time."""
        if self._left is not None and self._left < len(mv):
            mv = mv[: self._left]
        if self._w:  # the time was up while the caller was elsewhere (outside a wait: a str)
            raise Error(_NET, str(self._w))
        self._w = 1
        try:
            n = await hw.wait_read(self._st, mv)
            while n is None:  # (TLS: a partial record)
                n = await hw.wait_read(self._st, mv)
        except BaseException as e:
            raise self._failed(e)
        if self._w == 1:
            self._w = 0
        self._reads += 1
        if not n:
            if self._left:
                raise self._short()
            return 0
        if self._left is not None:
            self._left -= n
        return n

    async def json(self, limit):
        """The whole (small) body parsed as JSON, bounded before parsing: larger than `limit`, deeper
        or longer than the bounds above, or not JSON -> Error (_NET)."""
        if self.headers.get("transfer-encoding"):
            raise Error(_NET, "chunked responses are not supported (Twomes servers send Content-Length)")
        if self.length is not None and self.length > limit:
            raise Error(_NET, "response body too large")
        try:
            out = bytearray(self.length if self.length is not None else limit + 1)
        except MemoryError:
            raise Error(_NET, "no memory for the answer")
        mv = memoryview(out)
        got = 0
        while got < len(out):
            n = await self.readinto(mv[got:])
            if not n:
                break
            got += n
        if got > limit:  # no Content-Length: one byte more than the limit was there
            raise Error(_NET, "response body too large")
        check_json(out, got)
        try:
            # (MicroPython's json.loads reads any buffer; the stubs say str or bytes)
            return json.loads(out if got == len(out) else mv[:got])  # pyright: ignore[reportArgumentType]
        except ValueError:
            raise Error(_NET, "response is not JSON")
        except MemoryError:
            raise Error(_NET, "no memory for the answer")

    async def close(self):
        """Stop the watchdog, close the socket, then one turn of the event loop: the socket and its TLS
        state are let go only when nothing points at them, and until the loop turns the C stack of the
        calls that read them still may (MicroPython scans it conservatively). Measured when each
        connection had its own TLS context: without the turn the next request or the signature check
        found the last connection's context still in the heap (docs/heap.md)."""
        self._close()
        await hw.sleep_ms(0)

    def _close(self):
        if self._dog is not None:
            self._dog.cancel()
            self._dog = None
        if self._st is not None:
            hw.close(self._st)
            self._st = None


async def _now(n):
    return n


def _is(buf, i, j, name):
    """buf[i:j] (a header name, blanks around it ignored) == name (lower case bytes), without
    allocating."""
    i, j = _strip(buf, i, j)
    if j - i != len(name):
        return False
    for k in range(len(name)):
        c = buf[i + k]
        if 65 <= c <= 90:  # A-Z
            c += 32
        if c != name[k]:
            return False
    return True


def _strip(buf, i, j):
    """(i, j) without the blanks (space, tab) at either end of buf[i:j]."""
    while i < j and buf[i] in b" \t":
        i += 1
    while j > i and buf[j - 1] in b" \t":
        j -= 1
    return i, j


def _int(buf, i, j):
    """The decimal number in buf[i:j] (a Content-Length): Error when it is not one."""
    if i == j or j - i > 15:
        raise Error(_NET, "bad Content-Length")
    n = 0
    for k in range(i, j):
        c = buf[k] - 48
        if not 0 <= c <= 9:
            raise Error(_NET, "bad Content-Length")
        n = n * 10 + c
    return n


def _io_error(e, what):
    """A socket or TLS failure as the app's Error. TLS verification failures say why, in one line:
    MicroPython raises ValueError("The certificate ... does not match ...") or a negative mbedTLS code,
    CPython an ssl.SSLError."""
    text = str(e).strip()
    code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
    if (
        isinstance(e, ValueError)
        or code < -0x1000
        or "SSL" in type(e).__name__
        or "CERTIFICATE" in text.upper()
    ):
        return Error(_NET, "TLS refused: %s" % printable(text or str(code), 100))
    return Error(_NET, "%s (%s)" % (what, printable(text, 60)))


def request(
    method, url, extra="", body=None, timeout_s=20, head_buf=None, clk=hw, context=None, deadline_s=0
):
    """One request (`extra`: more header lines, each ending in CRLF) -> an awaitable: the Response with
    the answer's head read; the caller awaits it at once and closes the Response (finally). `context`:
    the TLS context that verifies the server (hw.tls_context, made from the CA): https needs one; the
    caller keeps it for its next connections (each verifies the server's certificate and name again).
    Error (_NET) when there is no HTTP answer within timeout_s of silence / deadline_s in all (default 3 x timeout_s: head and body), when the connection cannot be made or
    the request head does not fit the head buffer. (A function, not a coroutine: the awaitable is the
    Response's own, one coroutine less in the heap.)"""
    tls, host, port, at = split_url(url)
    if tls and context is None:
        raise Error(_NET, "https without a CA to verify the server")
    if head_buf is None:
        head_buf = bytearray(_HEAD_MAX)
    # the request head, written into the head buffer (the answer's head comes there after it is sent)
    n = hw.put(head_buf, 0, method)
    n = hw.put(head_buf, n, " ")
    n = hw.put(head_buf, n, url, at) if at < len(url) else hw.put(head_buf, n, "/")
    n = hw.put(head_buf, n, " HTTP/1.1\r\nHost: ")
    n = hw.put(head_buf, n, url, 8 if tls else 7, at)  # the authority as the URL says it
    n = hw.put(head_buf, n, "\r\nConnection: close\r\nUser-Agent: twomes-mpy\r\n")
    n = hw.put(head_buf, n, extra)
    if body is not None:
        n = hw.put(head_buf, n, "Content-Length: %d\r\n" % len(body))
    n = hw.put(head_buf, n, "\r\n")
    if n < 0:
        raise Error(_NET, "request head larger than the head buffer")
    try:
        st = hw.connect(host, port, context if tls else None)
    except (OSError, ValueError) as e:
        raise _io_error(e, "cannot connect")
    try:
        r = Response(st, head_buf, clk, int(timeout_s * 1000), int((deadline_s or 3 * timeout_s) * 1000))
    except BaseException:
        hw.close(st)
        raise
    return r._go(n, body)


async def fail(resp):
    """Raise Error(status) for an answer we did not want, with the (shortened, printable) "detail"
    text of a Twomes error body."""
    try:
        d = (await resp.json(1024)).get("detail", "")
        d = printable(d if isinstance(d, str) else "invalid request", 80)
    except Exception:  # noqa: BLE001 - the status is what matters
        d = ""
    raise Error(resp.status, d)
