# Reading one request of the portal into its preallocated buffer. Imported per request by
# twomes.portal and dropped again once the request is read, before the module that answers it comes
# in: the reader (the portal's biggest function) is never in the heap together with the POST handling.
# It never copies the head line by line: it scans the buffer and decodes only the request line and
# the four headers the portal uses.
from micropython import const

from twomes.portal import HttpError, fill

_BODY_MAX = const(1024)
# the headers the portal reads -> request attribute (values lower-cased)
_WANT = {b"host": "host", b"content-type": "ctype", b"origin": "origin", b"content-length": "length"}


async def read_request(reader, buf, req, n):
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
    try:
        parts = bytes(buf[: pos - 2]).decode().split(" ")
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
                    setattr(req, _WANT[k], bytes(buf[c + 1 : nl]).decode().strip().lower())
            pos = nl + 2
    except UnicodeError:
        raise HttpError(400, "not UTF-8") from None
    ln = req.length
    if ln:
        if not ln.isdigit() or len(ln) > 9:
            raise HttpError(400, "bad Content-Length")
        ln = int(ln)
        if ln > _BODY_MAX:
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
