# A small asyncio HTTP/1.1 client for the device: one request per connection, every read bounded in size
# and time, bodies streamed with readinto() into the caller's buffer (a firmware image never sits in RAM).
import asyncio

from micropython import const

from twomes.errors import HttpError, NetError

_HEAD_MAX = const(1024)  # status line + headers: the caller's preallocated buffer has this size
_KEEP = (
    "content-length",
    "content-type",
    "content-range",
    "date",
    "location",
    "transfer-encoding",
    "x-twomes-firmware-api",
)


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


async def _readinto(reader, mv):
    if hasattr(reader, "readinto"):
        return await reader.readinto(mv)
    data = await reader.read(len(mv))  # CPython streams (host tests)
    mv[: len(data)] = data
    return len(data)


class Response:
    def __init__(self, reader, writer, timeout_s, head_buf):
        self._r = reader
        self._w = writer
        self._t = timeout_s
        self.status = 0
        self.headers = {}
        self._head = head_buf  # preallocated once by the app: no 1 KB allocation per request
        self._pos = 0  # unread body bytes already in _head: _head[_pos:_end]
        self._end = 0
        self.length = None  # Content-Length, or None
        self.left = None  # body bytes still to read (None: until close)

    async def _read_head(self):
        mv = memoryview(self._head)
        end = 0
        while True:
            if end >= len(mv):
                raise NetError("response headers too large")
            n = await asyncio.wait_for(_readinto(self._r, mv[end:]), self._t)
            if not n:
                raise NetError("connection closed in headers")
            start = end - 3 if end > 3 else 0
            end += n
            i = bytes(mv[start:end]).find(b"\r\n\r\n")
            if i >= 0:
                break
        head_len = start + i + 4
        lines = bytes(mv[: head_len - 4]).decode().split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise NetError("not an HTTP response")
        try:
            self.status = int(parts[1])
        except ValueError:
            raise NetError("bad HTTP status")
        for line in lines[1:]:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            if k in _KEEP:
                self.headers[k] = v.strip()
        self._pos, self._end = head_len, end
        if "content-length" in self.headers:
            try:
                self.length = int(self.headers["content-length"])
            except ValueError:
                raise NetError("bad Content-Length")
            if self.length < 0:
                raise NetError("bad Content-Length")
            self.left = self.length

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
            n = await asyncio.wait_for(_readinto(self._r, mv[:want]), self._t)
            if not n:
                if self.left:
                    raise NetError(
                        "connection closed after %d of %d bytes" % (self.length - self.left, self.length)
                    )
                return 0
        if self.left is not None:
            self.left -= n
        return n

    async def body(self, limit):
        """The whole (small) body as bytes; larger than `limit` -> NetError."""
        if self.headers.get("transfer-encoding"):
            raise NetError("chunked responses are not supported (Twomes servers send Content-Length)")
        if self.length is not None and self.length > limit:
            raise NetError("response body too large")
        out = bytearray(self.length if self.length is not None else limit)
        mv = memoryview(out)
        got = 0
        while got < len(out):
            n = await self.readinto(mv[got:])
            if not n:
                break
            got += n
        if self.length is None and got >= limit and await self.readinto(memoryview(bytearray(1))):
            raise NetError("response body too large")
        return bytes(mv[:got])

    async def json(self, limit=4096):
        import json

        data = await self.body(limit)
        try:
            return json.loads(data)
        except ValueError:
            raise NetError("response is not JSON")

    async def close(self):
        try:
            self._w.close()
            await self._w.wait_closed()
        except Exception:  # noqa: BLE001 - closing must never raise
            pass


async def request(method, url, headers=None, body=None, timeout_s=20, open_connection=None, head_buf=None):
    """Send one request; returns a Response whose headers are read. The caller closes it (finally)."""
    tls, host, port, path = split_url(url)
    if open_connection is None:
        open_connection = asyncio.open_connection
    try:
        if tls:
            r, w = await asyncio.wait_for(open_connection(host, port, ssl=True), timeout_s)
        else:
            r, w = await asyncio.wait_for(open_connection(host, port), timeout_s)
    except asyncio.TimeoutError:
        raise NetError("connect timeout")
    except OSError as e:
        raise NetError("cannot connect (%s)" % e)
    resp = Response(r, w, timeout_s, head_buf if head_buf is not None else bytearray(_HEAD_MAX))
    try:
        hdr = "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: twomes-mpy\r\n" % (
            method,
            path or "/",
            host if port in (80, 443) else "%s:%d" % (host, port),
        )
        if headers:
            for k in headers:
                hdr += "%s: %s\r\n" % (k, headers[k])
        if body is not None:
            hdr += "Content-Length: %d\r\n" % len(body)
        w.write((hdr + "\r\n").encode())
        if body:
            w.write(body)
        await asyncio.wait_for(w.drain(), timeout_s)
        await resp._read_head()
    except asyncio.TimeoutError:
        await resp.close()
        raise NetError("timeout")
    except OSError as e:
        await resp.close()
        raise NetError("connection error (%s)" % e)
    except Exception:
        await resp.close()
        raise
    return resp


def detail_of(data):
    """The "detail" text of a Twomes error body (bytes), shortened."""
    import json

    try:
        d = json.loads(data).get("detail", "")
    except (ValueError, AttributeError):
        return ""
    return (d if isinstance(d, str) else "invalid request")[:80]


async def fail(resp):
    """Raise HttpError for a response we did not want (reads a bounded detail)."""
    try:
        data = await resp.body(1024)
    except Exception:  # noqa: BLE001 - the status is what matters
        data = b""
    raise HttpError(resp.status, detail_of(data))
