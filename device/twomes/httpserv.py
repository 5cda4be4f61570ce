# A tiny, strictly bounded HTTP/1.x request reader for the setup portal: request line + headers into one
# preallocated buffer (too large -> 431), a Content-Length body of at most `body_max` bytes into the same
# buffer (too large -> 413). The caller bounds the time: the whole read runs inside one asyncio.wait_for.
# (Form decoding and HTML escaping live in twomes.portal_req, loaded only while a request is served.)

_REASONS = (
    "\n200 OK\n202 Accepted\n204 No Content\n302 Found\n303 See Other\n400 Bad Request\n403 Forbidden"
    "\n404 Not Found\n405 Method Not Allowed\n408 Request Timeout\n409 Conflict\n411 Length Required"
    "\n413 Content Too Large\n415 Unsupported Media Type\n431 Request Header Fields Too Large"
    "\n503 Service Unavailable\n"
)


def reason(status):
    """The reason phrase of an HTTP status ("Error" for codes the portal never sends)."""
    i = _REASONS.find("\n%d " % status)
    return _REASONS[i + 5 : _REASONS.find("\n", i + 1)] if i >= 0 else "Error"


class HttpError(Exception):
    """A request that gets an error status (0: the client went away, answer nothing)."""

    def __init__(self, status, msg=""):
        super().__init__(status, msg)
        self.status = status
        self.msg = msg


class Request:
    def __init__(self):
        self.method = ""
        self.path = "/"
        self.query = ""
        self.host = ""
        self.ctype = ""
        self.origin = None
        self.length = -1
        self.body = b""
        self.answered = False  # set once a response has been started


async def fill(reader, buf, n):
    """Read more bytes into buf[n:]; returns how many (0 at end of stream)."""
    if hasattr(reader, "readinto"):  # MicroPython streams: no allocation
        got = await reader.readinto(memoryview(buf)[n:])
        return got or 0
    data = await reader.read(len(buf) - n)  # CPython asyncio
    buf[n : n + len(data)] = data
    return len(data)


def _head_end(buf, start, n):
    """(end of the header block, start of the body) or (-1, -1)."""
    i = buf.find(b"\r\n\r\n", start, n)
    if i >= 0:
        return i, i + 4
    i = buf.find(b"\n\n", start, n)
    if i >= 0:
        return i, i + 2
    return -1, -1


def _text(b):
    try:
        return bytes(b).decode()
    except UnicodeError:
        raise HttpError(400, "not UTF-8") from None


async def read_request(reader, buf, body_max, req):
    """Read one request from `reader` into the preallocated `buf` (its size bounds the head), filling
    `req` (a Request) as far as it gets: an error after the request line still knows the path."""
    size = len(buf)
    n = 0
    while True:
        if n >= size:
            raise HttpError(431, "request head too large")
        got = await fill(reader, buf, n)
        if not got:
            raise HttpError(0 if n == 0 else 400, "connection closed mid-request")
        start = n - 3 if n > 3 else 0
        n += got
        end, body_at = _head_end(buf, start, n)
        if end >= 0:
            break
    # request line
    eol = buf.find(b"\n", 0, end)
    if eol < 0:
        eol = end
    line = _text(buf[0:eol]).strip()
    parts = line.split(" ")
    if (
        len(parts) != 3
        or not parts[2].startswith("HTTP/1.")
        or not parts[0].isalpha()
        or not parts[0].isupper()
    ):
        raise HttpError(400, "bad request line")
    req.method = parts[0]
    target = parts[1]
    if target.startswith("http://"):  # absolute form
        slash = target.find("/", 7)
        target = target[slash:] if slash >= 0 else "/"
    if not target.startswith("/"):
        raise HttpError(400, "bad target")
    q = target.find("?")
    if q >= 0:
        req.path, req.query = target[:q], target[q + 1 :]
    else:
        req.path = target
    # headers: only the few we use are decoded
    pos = eol + 1
    while pos < end:
        nl = buf.find(b"\n", pos, end)
        if nl < 0:
            nl = end
        colon = buf.find(b":", pos, nl)
        if colon > pos:
            name = bytes(buf[pos:colon]).lower().strip()
            if name in (b"host", b"content-length", b"content-type", b"origin", b"transfer-encoding"):
                value = _text(buf[colon + 1 : nl]).strip()
                if name == b"host":
                    req.host = value.lower()
                elif name == b"content-type":
                    req.ctype = value.lower()
                elif name == b"origin":
                    req.origin = value.lower()
                elif name == b"transfer-encoding":
                    raise HttpError(411, "chunked bodies are not accepted")
                else:
                    if not value.isdigit() or len(value) > 9:
                        raise HttpError(400, "bad Content-Length")
                    req.length = int(value)
        pos = nl + 1
    # body (only when announced; never more than body_max)
    if req.length > 0:
        if req.length > body_max:
            raise HttpError(413, "body too large")
        have = n - body_at
        if have > req.length:
            have = req.length
        if body_at:
            buf[0:have] = buf[body_at : body_at + have]
        while have < req.length:
            got = await fill(reader, memoryview(buf)[: req.length], have)
            if not got:
                raise HttpError(400, "connection closed mid-body")
            have += got
        req.body = bytes(buf[0 : req.length])
    return req
