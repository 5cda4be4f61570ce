# The portal's request reader in process (twomes.ap.httpd): a head is read through a buffer that holds
# one line at a time, so every split of the bytes on the wire must give the same request, headers the
# portal does not read may be longer than the buffer, and every bound answers its own status.
import support
from twomes.ap import httpd

LINE = 512  # the portal's slot buffer (portal._LINE)
COOKIE = "Cookie: " + "; ".join("k%d=%s" % (i, "v" * 40) for i in range(14)) + "\r\n"
UA = (
    "User-Agent: Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    + "Chrome/131.0.0.0 Mobile Safari/537.36 " * 12
    + "\r\n"
)
BODY = b"ssid=home&password=secret-pass&name="
PHONE = (
    "POST /connect?from=form HTTP/1.1\r\nHost: 192.168.4.1\r\n"
    + UA
    + "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n"
    + COOKIE
    + "Origin: http://192.168.4.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    + "Content-Length: %d\r\n\r\n" % len(BODY)
).encode() + BODY


class Wire:
    """A client's bytes as the reader gets them: at most `size` bytes a read."""

    def __init__(self, data, size):
        self.data = data
        self.size = size

    async def read(self, n):
        got = self.data[: min(n, self.size)]
        self.data = self.data[len(got) :]
        return got

    async def readinto(self, mv):
        got = await self.read(len(mv))
        mv[: len(got)] = got
        return len(got)


def _read(raw, size, first=0):
    """(request, status of the HttpError or None) of `raw` read in pieces of `size`; `first` bytes are
    in the buffer already (the accept loop's first read)."""

    async def main():
        buf = bytearray(LINE)
        req = httpd.Request()
        buf[:first] = raw[:first]
        w = Wire(raw[first:], size)
        try:
            n, pos = await httpd.read_head(w, buf, req, first)
            if req.length:
                await httpd.read_body(w, buf, req, n, pos)
        except httpd.HttpError as e:
            return req, e.args[0]
        return req, None

    return support.run(main())


def test_a_phone_head_longer_than_the_buffer_reads_the_same_in_every_split():
    assert len(PHONE) > 2 * LINE and len(UA) > LINE and len(COOKIE) > LINE
    for size in (1, 2, 3, 5, 7, 64, 255, 511, 512, 513, 1000, 4096):
        for first in (0, 1, min(size, LINE)):
            req, err = _read(PHONE, size, first)
            assert err is None, (size, first, err)
            assert (req.method, req.path, req.query) == ("POST", "/connect", "from=form")
            assert req.host == "192.168.4.1" and req.origin == "http://192.168.4.1"
            assert req.ctype == "application/x-www-form-urlencoded" and req.length == str(len(BODY))
            assert req.body == BODY and not req.head


def test_a_skipped_header_may_end_anywhere_around_the_buffer_edge():
    # its CR and LF on either side of a refill: the next header is still read
    for pad in range(LINE - 24, LINE + 8):
        for extra in (0, LINE):
            raw = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * (pad + extra) + b"\r\nHost: here\r\n\r\n"
            for size in (1, 7, LINE):
                req, err = _read(raw, size)
                assert err is None and req.host == "here", (pad, extra, size, err)


def test_every_bound_of_the_head_answers_its_status():
    long_path = b"GET /" + b"a" * LINE + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    cases = [
        (long_path, 414),  # the request line does not fit in the buffer
        (b"GET / HTTP/1.1\r\nHost: " + b"h" * LINE + b"\r\n\r\n", 431),  # a header the portal reads
        (b"POST / HTTP/1.1\r\nContent-Length: " + b"1" * LINE + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: " + b"x" * LINE + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nX-" + b"n" * LINE + b": v\r\n\r\n", 431),  # a name longer than the buffer
        (b"GET / HTTP/1.1\r\n" + b"X-Pad: aaaaaaaaaa\r\n" * 440 + b"\r\n", 431),  # 8 KB of head
        (b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n", 431),  # one skipped header of 8 KB
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"POST / HTTP/1.1\r\nContent-Length: 1025\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nContent-Length: 12x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: \xff\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", 400),  # closed mid-head
        (b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 400),  # closed mid-body
        (b"", 0),  # closed before a byte: nothing to answer
    ]
    for raw, status in cases:
        for size in (1, 100, 4096):
            req, err = _read(raw, size)
            assert err == status, (raw[:40], size, err)
    # 8 KB of head in all is still a head; the path of a refused head is known (API errors in JSON)
    req, err = _read(b"HEAD /api/x HTTP/1.1\r\n" + b"X-Pad: aaaaaaaaaa\r\n" * 400 + b"\r\n", 512)
    assert err is None and req.head and req.path == "/api/x"
    req, err = _read(b"GET /api/status HTTP/1.1\r\nHost: " + b"h" * LINE + b"\r\n\r\n", 512)
    assert err == 431 and req.path == "/api/status"


def test_a_body_longer_than_the_buffer_is_read_whole():
    for ln in (LINE - 1, LINE, LINE + 1, 1024):
        body = bytes(48 + i % 10 for i in range(ln))
        raw = b"POST /api/wifi HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % ln + body
        for size in (1, 13, 600, 4096):
            req, err = _read(raw, size)
            assert err is None and req.body == body and isinstance(req.body, bytes), (ln, size, err)
