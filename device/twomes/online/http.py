# A small asyncio HTTP/1.1 client for the device: one request per connection; https verified against
# the deployed CA (twomes/hw.py tls_context); bodies streamed with readinto() into the caller's buffer
# (a firmware image never sits in RAM). Whatever a server sends, the caller gets a Response or an
# errors.Error - never a crash:
#   - time: every request has ONE watchdog task that bounds the silence between bytes (timeout_s) and
#     the whole request (deadline_s: connect, head and body) - no task or closure per read;
#   - size: the head must fit the caller's 1 KB head buffer, JSON bodies are bounded in size, nesting
#     depth and number of values BEFORE they are parsed (a 2 KB "[[[[..." must not exhaust the heap);
#   - errors: timeouts, resets, refused connections, TLS failures, garbage become Error(0, reason).
# The streaming path reads what the socket already holds without waiting or allocating (Conn.read_now)
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
# a read that finds data ready does not wait; every _TURN-th such read in a row (a power of two) lets
# the other tasks run (a 1 KB buffer: every 64 KB; the await allocates a coroutine, ~150 B)
_TURN = const(64)
# the response headers anybody reads (lower case); the others are skipped
_KEEP = ("content-length", "content-range", "date", "transfer-encoding", "x-twomes-firmware-api", "etag")


def split_url(url):
    """'https://host:port/base' -> (https?, host, port, base path without trailing slash)."""
    if url.startswith("https://"):
        tls, rest, port = True, url[8:], 443
    elif url.startswith("http://"):
        tls, rest, port = False, url[7:], 80
    else:
        raise ValueError("URL must start with http:// or https://")
    slash = rest.find("/")
    host, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:].rstrip("/"))
    if host.startswith("["):  # [::1]:8000
        end = host.find("]")
        if end < 0:
            raise ValueError("bad IPv6 host")
        if host[end + 1 : end + 2] == ":":
            port = int(host[end + 2 :])
        host = host[1:end]
    elif ":" in host:
        host, p = host.rsplit(":", 1)
        port = int(p)
    if not host or not 0 < port < 65536:
        raise ValueError("URL has no host")
    return tls, host, port, path


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


class _Watch:
    """The clock of one request: when the peer is silent for idle_ms or the request outlives its
    deadline, the request's task is cancelled while it waits inside this module (never elsewhere), and
    that wait raises Error(_NET). One task per request, not one per read."""

    def __init__(self, clk, idle_ms, total_ms):
        now = clk.ticks_ms()
        self.clk = clk
        self.idle = idle_ms
        self.last = now
        self.until = clk.ticks_add(now, total_ms)
        self.inside = False  # the request's task waits in this module now
        self.expired = None  # the reason, once the time is up
        self.task = asyncio.current_task()
        self.dog = asyncio.create_task(self._run())

    async def _run(self):
        clk = self.clk
        while True:
            now = clk.ticks_ms()
            left = min(
                clk.ticks_diff(self.until, now), clk.ticks_diff(clk.ticks_add(self.last, self.idle), now)
            )
            if left <= 0:
                self.expired = "timeout" if clk.ticks_diff(self.until, now) > 0 else "request took too long"
                if self.inside:
                    self.task.cancel()  # pyright: ignore[reportOptionalMemberAccess] - set while inside
                return
            await asyncio.sleep(min(left, 1000) / 1000)

    async def wait(self, aw):
        """await aw within the request's time."""
        if self.expired:
            raise Error(_NET, self.expired)
        self.inside = True
        try:
            return await aw
        except asyncio.CancelledError:
            if self.expired is None:
                raise  # not ours: the app is restarting
            hw.uncancel(self.task)
            raise Error(_NET, self.expired)
        finally:
            self.inside = False

    def stop(self):
        if self.dog is not None:
            self.dog.cancel()
            self.dog = None


class Response:
    """One answer: status, the headers in _KEEP, and its body read in bounded pieces. request() makes
    it with the head read; the caller closes it (in a finally)."""

    def __init__(self, conn, watch, head_buf):
        self._c = conn
        self._watch = watch
        self._head = head_buf  # preallocated once by the app: no 1 KB allocation per request
        self.status = 0
        self.headers = {}
        self._pos = self._end = 0  # unread body bytes already in _head: _head[_pos:_end]
        self.length = None  # Content-Length, or None
        self.left = None  # body bytes still to read (None: until close)
        self._reads = 0  # reads without a wait: every _TURN-th one yields to the other tasks

    async def _recv(self, mv):
        """One read from the connection into mv; 0 when the peer closed. What the socket holds is
        taken at once; an empty socket is waited for within the request's time."""
        c = self._c
        w = self._watch
        try:
            n = c.read_now(mv)
            while n is None:
                n = await w.wait(c.readinto(mv))
        except (OSError, ValueError) as e:  # MicroPython's TLS says ValueError
            raise _io_error(e, "connection error")
        if n:
            w.last = w.clk.ticks_ms()
        return n

    async def _head_in(self):
        """The head, into the head buffer: status line and headers, up to the empty line; parsed where
        it lies, line by line (no copy of the whole head); only the headers kept are decoded."""
        head = self._head
        end = 0
        while True:
            if end >= len(head):
                raise Error(_NET, "response headers too large")
            n = await self._recv(memoryview(head)[end:])
            if not n:
                raise Error(_NET, "connection closed in headers")
            i = head.find(b"\r\n\r\n", end - 3 if end > 3 else 0, end + n)
            end += n
            if i >= 0:
                break
        self._pos, self._end = i + 4, end
        mv = memoryview(head)
        eol = head.find(b"\r\n", 0, i + 2)
        parts = bytes(mv[:eol]).split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise Error(_NET, "not an HTTP response")
        try:
            self.status = int(parts[1])
        except ValueError:
            raise Error(_NET, "bad HTTP status")
        if not 100 <= self.status <= 599:
            raise Error(_NET, "bad HTTP status")
        parts = None
        try:
            while eol < i:
                pos = eol + 2
                eol = head.find(b"\r\n", pos, i + 2)
                c = head.find(b":", pos, eol)
                if c < 0:
                    c = eol  # no colon: a name without a value
                k = str(mv[pos:c], "utf-8").strip().lower()
                if k in _KEEP:
                    self.headers[k] = str(mv[c + 1 : eol], "utf-8").strip()
        except UnicodeError:
            raise Error(_NET, "response headers are not text")
        if "content-length" in self.headers:
            try:
                self.length = self.left = int(self.headers["content-length"])
            except ValueError:
                raise Error(_NET, "bad Content-Length")
            if self.length < 0:
                raise Error(_NET, "bad Content-Length")

    def read_now(self, mv):
        """Body bytes already received, into mv, without waiting and without allocating: their
        count, 0 at the end of the body, or None when the caller must await readinto() (nothing here
        yet - or the _TURN-th read in a row: that await lets the other tasks run during a long
        download).
        (Kept to few locals and a shallow stack: MicroPython allocates a larger frame on the heap at
        every call.)"""
        left = self.left
        if left is not None and left < len(mv):
            if not left:
                return 0
            mv = mv[:left]  # the last piece of the body only
        if self._pos < self._end:
            return self._from_head(mv)
        self._reads += 1
        if not self._reads & (_TURN - 1):
            # the peer was not silent in the last _TURN reads: the silence bound restarts here
            self._watch.last = self._watch.clk.ticks_ms()
            return None
        n = _take(self._c, mv)
        if n is None:
            return None
        if not n:
            if left:
                raise self._short()
            return 0
        if left is not None:
            self.left = left - n
        return n

    def _from_head(self, mv):
        """Body bytes that came with the head (in the head buffer), into mv."""
        n = min(len(mv), self._end - self._pos)
        mv[:n] = memoryview(self._head)[self._pos : self._pos + n]
        self._pos += n
        if self.left is not None:
            self.left -= n
        return n

    def _short(self):
        # (only with a Content-Length: length and left are ints here)
        return Error(_NET, "connection closed after %d of %d bytes" % (self.length - self.left, self.length))  # pyright: ignore[reportOperatorIssue]

    async def readinto(self, mv):
        """Read up to len(mv) body bytes; 0 at the end of the body (read_now first where allocation
        matters: this is a coroutine)."""
        n = self.read_now(mv)
        if n is not None:
            return n
        if not self._reads & (_TURN - 1):  # a turn for the other tasks: data may be there already
            await asyncio.sleep(0)
            self._reads += 1
            n = self.read_now(mv)
            if n is not None:
                return n
        want = len(mv)
        if self.left is not None and self.left < want:
            want = self.left
        n = await self._recv(mv if want == len(mv) else mv[:want])
        if not n:
            if self.left:
                raise self._short()
            return 0
        if self.left is not None:
            self.left -= n
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
        self._watch.stop()
        self._c.close()


def _take(c, mv):
    """c.read_now(mv), or None when it failed: the caller then awaits readinto(), whose read meets
    the failure again and names it (or the peer's close or the request's clock ends the request).
    No `except ... as e` and no tuple here: MicroPython would put this frame on the heap at every call
    (~160 B a read)."""
    try:
        return c.read_now(mv)
    except OSError:
        return None
    except ValueError:  # MicroPython's TLS
        return None


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


async def request(
    method, url, extra="", body=None, timeout_s=20, head_buf=None, clk=hw, ctx=None, deadline_s=0
):
    """Send one request (`extra`: more header lines, each ending in CRLF) and read the answer's head.
    Returns a Response; the caller closes it (finally). `ctx`: the TLS context (https needs one).
    Error (_NET) when there is no HTTP answer within timeout_s of silence / deadline_s in all."""
    tls, host, port, path = split_url(url)
    if tls and ctx is None:
        raise Error(_NET, "https without a CA to verify the server")
    total = int((deadline_s or 3 * timeout_s) * 1000)
    watch = _Watch(clk, int(timeout_s * 1000), total)
    conn = hw.Conn()
    resp = Response(conn, watch, head_buf if head_buf is not None else bytearray(_HEAD_MAX))
    try:
        try:
            await watch.wait(conn.open(host, port, ctx if tls else None))
        except (OSError, ValueError) as e:
            raise _io_error(e, "cannot connect")
        # the head in one formatting and one encoding: no intermediate copies of it
        head = (
            "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: twomes-mpy\r\n%s%s\r\n"
            % (
                method,
                path or "/",
                host if port in (80, 443) else "%s:%d" % (host, port),
                extra,
                "" if body is None else "Content-Length: %d\r\n" % len(body),
            )
        ).encode()
        try:
            await watch.wait(conn.send(head))
            head = None
            if body:
                await watch.wait(conn.send(body))
        except (OSError, ValueError) as e:
            raise _io_error(e, "connection error")
        await resp._head_in()
    except BaseException:
        await resp.close()
        raise
    return resp


async def fail(resp):
    """Raise Error(status) for an answer we did not want, with the (shortened, printable) "detail"
    text of a Twomes error body."""
    try:
        d = (await resp.json(1024)).get("detail", "")
        d = printable(d if isinstance(d, str) else "invalid request", 80)
    except Exception:  # noqa: BLE001 - the status is what matters
        d = ""
    raise Error(resp.status, d)
