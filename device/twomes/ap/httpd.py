# The small HTTP/1.1 server layer of the setup portal: the request reader (head and body through a buffer
# the caller owns: its size bounds a line of the head) and the response helpers. One request per
# connection (Connection: close). Imports nothing else of twomes.ap: the portal, the API, the form and
# the pages build on it.
from micropython import const

from twomes import hw

_BODY_MAX = const(1024)
_HEAD_MAX = const(8192)  # a request head at most (431); the caller's buffer bounds a line of it
JSON = "application/json"
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
# reason phrases of the statuses the portal sends (one string: a table would cost an object per entry)
_REASONS = (
    "\n200 OK\n202 Accepted\n302 Found\n303 See Other\n400 Bad Request\n403 Forbidden\n404 Not Found"
    "\n405 Method Not Allowed\n408 Request Timeout\n409 Conflict\n411 Length Required\n413 Content Too Large"
    "\n414 URI Too Long\n415 Unsupported Media Type\n431 Request Header Fields Too Large"
    "\n503 Service Unavailable\n"
)
# the headers the portal reads -> request attribute (values lower-cased)
_WANT = {b"host": "host", b"content-type": "ctype", b"origin": "origin", b"content-length": "length"}


class HttpError(Exception):
    """args: (status, message). Status 0: the client went away, answer nothing."""


class Request:
    """What the reader found; `answered` once a response was started (an error can no longer be sent)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.path = "/"
        self.method = self.query = self.host = self.ctype = self.length = ""
        self.origin = None
        self.body = b""
        self.head = False  # a HEAD request: headers only
        self.answered = False


def send(w, status, ctype=None, body=None, head=False, where=None):
    """Status line, headers and `body` (None: the caller streams the body, which ends at close; a
    redirect's is empty). `head`: a HEAD request, no body. `where`: a redirect's Location. Written in
    pieces, never built as one string."""
    if body is None and where:
        body = b""
    i = _REASONS.find("\n%d " % status)
    reason = _REASONS[i + 5 : _REASONS.find("\n", i + 1)] if i >= 0 else "Error"
    w.write(b"HTTP/1.1 %d " % status)
    w.write(reason.encode())
    w.write(b"\r\nConnection: close\r\nCache-Control: no-store\r\n")
    if ctype:
        w.write(b"Content-Type: ")
        w.write(ctype.encode())
        w.write(b"\r\nX-Content-Type-Options: nosniff\r\n")
        if ctype is HTML:  # nothing but the inline CSS may run or load
            w.write(
                b"Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; form-action 'self'\r\n"
            )
    if body is not None:
        w.write(b"Content-Length: %d\r\n" % len(body))
    if where:
        w.write(b"Location: ")
        w.write(where.encode())
        w.write(b"\r\n")
    w.write(b"\r\n")
    if body and not head:
        w.write(body)


def escape(s):
    """HTML-escape text for element content and quoted attributes."""
    return (
        s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


async def read_head(reader, buf, req, n=0):
    """Read a request head and fill `req`. `buf` (the caller's) holds a line at a time: each line is
    parsed as soon as it is whole and then dropped, so the buffer bounds a line, not the head. Too long
    for it: the request line (414) or a header the portal reads (431); a header it does not read (a
    long User-Agent or Cookie) is skipped. The whole head is at most _HEAD_MAX bytes (431). `n`: bytes
    in `buf` already (read by the portal's accept loop). Returns (n, pos): bytes in `buf` and the offset
    of the body's first byte. An error after the request line still knows the path (API errors are
    answered in JSON)."""
    mv = memoryview(buf)
    pos = 0  # start of the first line not parsed yet
    seen = 0  # bytes of the head dropped from `buf` already
    line = False  # the request line is parsed (the path and HEAD are known even if the rest fails)
    skip = False  # in a header too long for `buf` that the portal does not read: dropped to its end
    while True:
        nl = buf.find(b"\r\n", pos, n)
        if nl >= 0:
            if skip:
                skip = False
            elif not line:
                _request_line(buf, nl, req)
                line = True
            elif nl == pos:  # the blank line: the end of the head
                if seen + nl + 2 > _HEAD_MAX:
                    break
                return n, nl + 2
            else:
                _header(buf, pos, nl, req)
            pos = nl + 2
            continue
        if skip:  # drop all of it but a last CR (its LF may come next)
            keep = 1 if buf[n - 1] == 13 else 0
            seen += n - keep
            mv[:keep] = mv[n - keep : n]
            n = keep
            pos = 0
        elif n == len(buf):
            if pos == 0:  # one line fills the buffer
                if not line:
                    raise HttpError(414, "request line too long")
                c = buf.find(b":", 0, n)
                if c < 0 or _wanted(bytes(buf[:c]).lower()):
                    raise HttpError(431, "request header too large")
                skip = True
                continue
            seen += pos  # the lines parsed make room
            mv[: n - pos] = mv[pos:n]
            n -= pos
            pos = 0
        if seen + n >= _HEAD_MAX:
            break
        got = await hw.readinto(reader, mv[n:])
        if not got:
            raise HttpError(400 if seen + n else 0, "closed mid-request")
        n += got
    raise HttpError(431, "request head too large")


def _wanted(k):
    """Whether the portal reads header `k` (lower-case bytes): it must fit in the line buffer."""
    return k in _WANT or k == b"transfer-encoding"


def _header(buf, pos, nl, req):
    c = buf.find(b":", pos, nl)
    if c <= pos:
        return
    k = bytes(buf[pos:c]).lower()
    if k == b"transfer-encoding":
        raise HttpError(411, "chunked bodies are not accepted")
    if k in _WANT:
        try:
            setattr(req, _WANT[k], bytes(buf[c + 1 : nl]).decode().strip().lower())
        except UnicodeError:
            raise HttpError(400, "not UTF-8") from None


def _request_line(buf, pos, req):
    try:
        parts = bytes(buf[:pos]).decode().split(" ")
    except UnicodeError:
        raise HttpError(400, "not UTF-8") from None
    if len(parts) != 3 or parts[2][:7] != "HTTP/1." or not parts[0].isalpha() or parts[1][:1] != "/":
        raise HttpError(400, "bad request line")
    req.method = parts[0]
    req.head = parts[0] == "HEAD"
    req.path, _, req.query = parts[1].partition("?")


async def read_body(reader, buf, req, n, pos):
    """The body announced by Content-Length (at most _BODY_MAX: 413) into req.body; `buf[pos:n]`: its
    first bytes, read with the head. A body that fits is read in `buf`, a longer one in its own buffer."""
    ln = req.length
    if not ln:
        return
    if not ln.isdigit() or len(ln) > 9:
        raise HttpError(400, "bad Content-Length")
    ln = int(ln)
    if ln > _BODY_MAX:
        raise HttpError(413, "body too large")
    have = min(n - pos, ln)
    mv = memoryview(buf)
    into = mv if ln <= len(buf) else memoryview(bytearray(ln))
    into[:have] = mv[pos : pos + have]
    while have < ln:
        got = await hw.readinto(reader, into[have:ln])
        if not got:
            raise HttpError(400, "closed mid-body")
        have += got
    req.body = bytes(into[:ln])
