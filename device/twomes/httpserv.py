# A tiny, strictly bounded HTTP/1.x request reader for the setup portal: request line + headers into one
# preallocated buffer (too large -> 431), a Content-Length body of at most `body_max` bytes into the same
# buffer (too large -> 413). The caller bounds the time: the whole read runs inside one asyncio.wait_for.
# Written for a small heap: no per-line copies of the head, only the five headers used are decoded.

_REASONS = (
    "\n200 OK\n202 Accepted\n302 Found\n303 See Other\n400 Bad Request\n403 Forbidden\n404 Not Found"
    "\n405 Method Not Allowed\n408 Request Timeout\n409 Conflict\n411 Length Required\n413 Content Too Large"
    "\n415 Unsupported Media Type\n431 Request Header Fields Too Large\n503 Service Unavailable\n"
)
_WANT = {b"host": "host", b"content-type": "ctype", b"origin": "origin", b"content-length": "length"}


def reason(status):
    """The reason phrase of an HTTP status ("Error" for codes the portal never sends)."""
    i = _REASONS.find("\n%d " % status)
    return _REASONS[i + 5 : _REASONS.find("\n", i + 1)] if i >= 0 else "Error"


class HttpError(Exception):
    """args: (status, message). Status 0: the client went away, answer nothing."""


class Request:
    # defaults; read_request sets what the request has (header values lower-cased)
    method = ""
    path = "/"
    query = ""
    host = ""
    ctype = ""
    origin = None
    length = ""
    body = b""
    answered = False  # set once a response has been started


async def fill(reader, buf, n):
    """Read more bytes into buf[n:]; returns how many (0 at end of stream)."""
    if hasattr(reader, "readinto"):  # MicroPython streams: no allocation
        return await reader.readinto(memoryview(buf)[n:]) or 0
    data = await reader.read(len(buf) - n)  # CPython asyncio
    buf[n : n + len(data)] = data
    return len(data)


def _text(b):
    try:
        return bytes(b).decode()
    except UnicodeError:
        raise HttpError(400, "not UTF-8") from None


async def read_request(reader, buf, body_max, req, n=0):
    """Read one request into the preallocated `buf` (its size bounds the head; its first `n` bytes are
    already read), filling `req` as far as it gets: an error after the request line still knows the
    path (API errors are answered in JSON)."""
    end = -1
    while end < 0:
        if n >= len(buf):
            raise HttpError(431, "request head too large")
        got = await fill(reader, buf, n)
        if not got:
            raise HttpError(400 if n else 0, "closed mid-request")
        n += got
        end = buf.find(b"\r\n\r\n", 0, n)
    pos = buf.find(b"\r\n") + 2
    parts = _text(buf[: pos - 2]).split(" ")
    if len(parts) != 3 or parts[2][:7] != "HTTP/1." or not parts[0].isalpha() or parts[1][:1] != "/":
        raise HttpError(400, "bad request line")
    req.method = parts[0]
    req.path, _, req.query = parts[1].partition("?")
    while pos < end:
        nl = buf.find(b"\r\n", pos, end + 2)
        c = buf.find(b":", pos, nl)
        if c > pos:
            k = bytes(buf[pos:c]).lower()
            if k == b"transfer-encoding":
                raise HttpError(411, "chunked bodies are not accepted")
            if k in _WANT:
                setattr(req, _WANT[k], _text(buf[c + 1 : nl]).strip().lower())
        pos = nl + 2
    ln = req.length
    if ln:
        if not ln.isdigit() or len(ln) > 9:
            raise HttpError(400, "bad Content-Length")
        ln = int(ln)
        if ln > body_max:
            raise HttpError(413, "body too large")
        pos = end + 4
        have = min(n - pos, ln)
        buf[:have] = buf[pos : pos + have]
        mv = memoryview(buf)[:ln]
        while have < ln:
            got = await fill(reader, mv, have)
            if not got:
                raise HttpError(400, "closed mid-body")
            have += got
        req.body = bytes(mv)
