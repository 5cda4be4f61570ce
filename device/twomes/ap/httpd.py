# The small HTTP/1.1 server layer of the setup portal: the request reader (head and body into a buffer
# the caller owns; the buffer's size bounds the head) and the response helpers. One request per
# connection (Connection: close). Imports nothing else of twomes.ap: the portal, the API, the form and
# the pages build on it.
from micropython import const

from twomes import hw

_BODY_MAX = const(1024)
JSON = "application/json"
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
# reason phrases of the statuses the portal sends (one string: a table would cost an object per entry)
_REASONS = (
    "\n200 OK\n202 Accepted\n302 Found\n303 See Other\n400 Bad Request\n403 Forbidden\n404 Not Found"
    "\n405 Method Not Allowed\n408 Request Timeout\n409 Conflict\n411 Length Required\n413 Content Too Large"
    "\n415 Unsupported Media Type\n431 Request Header Fields Too Large\n503 Service Unavailable\n"
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
    """Read a request head into `buf` (its size bounds the head: 431) and fill `req`; `n`: bytes of it
    in `buf` already (read by the portal's accept loop). Returns (n, end): bytes in buf, offset of the
    blank line. An error after the request line still knows the path (API errors are answered in JSON)."""
    line = False  # the request line is read (the path and HEAD are known even if the rest fails)
    while True:
        if not line:
            pos = buf.find(b"\r\n", 0, n)
            if pos >= 0:
                _request_line(buf, pos, req)
                line = True
        end = buf.find(b"\r\n\r\n", 0, n)
        if end >= 0:
            break
        if n >= len(buf):
            raise HttpError(431, "request head too large")
        got = await hw.readinto(reader, memoryview(buf)[n:])
        if not got:
            raise HttpError(400 if n else 0, "closed mid-request")
        n += got
    pos = buf.find(b"\r\n") + 2
    try:
        while pos < end:
            nl = buf.find(b"\r\n", pos, end + 2)
            c = buf.find(b":", pos, nl)
            if c > pos:
                k = bytes(buf[pos:c]).lower()
                if k == b"transfer-encoding":
                    raise HttpError(411, "chunked bodies are not accepted")
                if k in _WANT:
                    setattr(req, _WANT[k], bytes(buf[c + 1 : nl]).decode().strip().lower())
            pos = nl + 2
    except UnicodeError:
        raise HttpError(400, "not UTF-8") from None
    return n, end


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


async def read_body(reader, buf, req, n, end):
    """The body announced by Content-Length (at most _BODY_MAX: 413) into req.body, reusing `buf`."""
    ln = req.length
    if not ln:
        return
    if not ln.isdigit() or len(ln) > 9:
        raise HttpError(400, "bad Content-Length")
    ln = int(ln)
    if ln > _BODY_MAX or ln > len(buf):
        raise HttpError(413, "body too large")
    pos = end + 4
    have = min(n - pos, ln)
    buf[:have] = buf[pos : pos + have]
    mv = memoryview(buf)
    while have < ln:
        got = await hw.readinto(reader, mv[have:ln])
        if not got:
            raise HttpError(400, "closed mid-body")
        have += got
    req.body = bytes(mv[:ln])
