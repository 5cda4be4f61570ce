# A small asyncio HTTP/1.1 client for the device: one request per connection, every read bounded in size
# and time, bodies streamed with readinto() into the caller's buffer (a firmware image never sits in RAM).
# Few functions and no buffer of its own per request: code and garbage both cost heap (README).
import asyncio
import json

from micropython import const

from twomes.errors import Error

_NET = const(0)  # errors.Error status: no (readable) answer
_HEAD_MAX = const(1024)  # status line + headers: the size of the app's preallocated head buffer
# the response headers anybody reads (lower case); the others are skipped
_KEEP = ("content-length", "content-range", "date", "transfer-encoding", "x-twomes-firmware-api")
# asyncio loads its stream code at the first use of open_connection: here, next to this module's code,
# not in the middle of the first request's short-lived strings (where it would leave the heap in holes)
_connect = asyncio.open_connection


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
    if not host:
        raise ValueError("URL has no host")
    return tls, host, port, path


class Response:
    """One answer: status, the headers in _KEEP, and its body read in bounded pieces. request() makes
    it with the head read; the caller closes it (in a finally)."""

    def __init__(self, reader, writer, timeout_s, head_buf):
        self._r = reader
        self._w = writer
        self._t = timeout_s
        self._head = head_buf  # preallocated once by the app: no 1 KB allocation per request
        self.status = 0
        self.headers = {}
        self._pos = self._end = 0  # unread body bytes already in _head: _head[_pos:_end]
        self.length = None  # Content-Length, or None
        self.left = None  # body bytes still to read (None: until close)

    async def _recv(self, mv):
        """One read from the connection into mv, bounded in time; 0 when the peer closed."""
        if hasattr(self._r, "readinto"):
            return await asyncio.wait_for(self._r.readinto(mv), self._t)
        data = await asyncio.wait_for(self._r.read(len(mv)), self._t)  # CPython streams (host tests)
        mv[: len(data)] = data
        return len(data)

    async def _head_in(self):
        """The head, into the head buffer: status line and headers, up to the empty line. A method of
        its own: a coroutine's state is one block of heap, and the smaller it is the easier it fits."""

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
        # parsed where it lies, line by line: no copy of the whole head and no list of its lines (the
        # update boot's heap has no room for them); only the headers kept are decoded
        mv = memoryview(head)
        eol = head.find(b"\r\n", 0, i + 2)
        parts = bytes(mv[:eol]).split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise Error(_NET, "not an HTTP response")
        try:
            self.status = int(parts[1])
        except ValueError:
            raise Error(_NET, "bad HTTP status")
        parts = None
        while eol < i:
            pos = eol + 2
            eol = head.find(b"\r\n", pos, i + 2)
            c = head.find(b":", pos, eol)
            if c < 0:
                c = eol  # no colon: a name without a value
            k = str(mv[pos:c], "utf-8").strip().lower()
            if k in _KEEP:
                self.headers[k] = str(mv[c + 1 : eol], "utf-8").strip()
        if "content-length" in self.headers:
            try:
                self.length = self.left = int(self.headers["content-length"])
            except ValueError:
                raise Error(_NET, "bad Content-Length")
            if self.length < 0:
                raise Error(_NET, "bad Content-Length")

    async def readinto(self, mv):
        """Read up to len(mv) body bytes; 0 at the end of the body."""
        want = len(mv)
        if self.left is not None:
            want = min(want, self.left)
        if want == 0:
            return 0
        if self._pos < self._end:
            n = min(want, self._end - self._pos)
            mv[:n] = memoryview(self._head)[self._pos : self._pos + n]
            self._pos += n
        else:
            n = None
            if hasattr(self._r, "s"):
                # MicroPython: bytes already received are read at once from the (non-blocking) socket,
                # after a yield to the other tasks as the stream's own read does; only an empty socket
                # is waited for (_recv: wait_for, whose tasks and closures cost ~0.5 KB of heap per
                # read; a bundle's header lines are read a byte at a time)
                await asyncio.sleep(0)
                n = self._r.s.readinto(mv[:want])
            if n is None:
                n = await self._recv(mv[:want])
            if not n:
                if self.left:
                    raise Error(
                        _NET,
                        "connection closed after %d of %d bytes" % (self.length - self.left, self.length),
                    )
                return 0
        if self.left is not None:
            self.left -= n
        return n

    async def json(self, limit):
        """The whole (small) body parsed as JSON; larger than `limit` or not JSON -> Error (_NET)."""
        if self.headers.get("transfer-encoding"):
            raise Error(_NET, "chunked responses are not supported (Twomes servers send Content-Length)")
        if self.length is not None and self.length > limit:
            raise Error(_NET, "response body too large")
        out = bytearray(self.length if self.length is not None else limit + 1)
        mv = memoryview(out)
        got = 0
        while got < len(out):
            n = await self.readinto(mv[got:])
            if not n:
                break
            got += n
        if got > limit:  # no Content-Length: one byte more than the limit was there
            raise Error(_NET, "response body too large")
        try:
            return json.loads(out if got == len(out) else out[:got])
        except ValueError:
            raise Error(_NET, "response is not JSON")

    async def close(self):
        try:
            self._w.close()
            await self._w.wait_closed()
        except Exception:  # noqa: BLE001 - closing must never raise
            pass


async def request(method, url, extra="", body=None, timeout_s=20, open_connection=None, head_buf=None):
    """Send one request (`extra`: more header lines, each ending in CRLF) and read the answer's head.
    Returns a Response; the caller closes it (finally). Error (_NET) when there is no HTTP answer."""
    tls, host, port, path = split_url(url)
    if open_connection is None:
        open_connection = _connect
    try:
        r, w = await asyncio.wait_for(open_connection(host, port, ssl=tls), timeout_s)
    except asyncio.TimeoutError:
        raise Error(_NET, "connect timeout")
    except OSError as e:
        raise Error(_NET, "cannot connect (%s)" % e)
    resp = Response(r, w, timeout_s, head_buf if head_buf is not None else bytearray(_HEAD_MAX))
    try:
        # the head in one formatting and one encoding: no intermediate copies of it
        w.write(
            (
                "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: twomes-mpy\r\n%s%s\r\n"
                % (
                    method,
                    path or "/",
                    host if port in (80, 443) else "%s:%d" % (host, port),
                    extra,
                    "" if body is None else "Content-Length: %d\r\n" % len(body),
                )
            ).encode()
        )
        if body:
            w.write(body)
        await asyncio.wait_for(w.drain(), timeout_s)
        await resp._head_in()
    except Exception as e:
        await resp.close()
        if isinstance(e, asyncio.TimeoutError):  # first: on CPython it is an OSError too
            raise Error(_NET, "timeout")
        if isinstance(e, OSError):
            raise Error(_NET, "connection error (%s)" % e)
        if isinstance(e, UnicodeError):
            raise Error(_NET, "not an HTTP response")
        raise
    return resp


async def fail(resp):
    """Raise Error(status) for an answer we did not want, with the (shortened) "detail" text of a Twomes
    error body."""
    try:
        d = (await resp.json(1024)).get("detail", "")
        d = (d if isinstance(d, str) else "invalid request")[:80]
    except Exception:  # noqa: BLE001 - the status is what matters
        d = ""
    raise Error(resp.status, d)
