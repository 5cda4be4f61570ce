# The setup access point: captive DNS + a small HTTP server with the Wi-Fi form (no JavaScript) and a
# JSON API for a provisioning app. Phones' captive-portal probes get a 302 to the form, so the setup page
# pops up by itself. Only a deliberate POST (form or API) acts: it hands the credentials to the app's
# controller (ctl.submit), which tests them while the AP stays up. The app decides when to close.
#
# Heap: this module is what stays loaded while the portal runs (accept, probe redirect, the credential
# test). Bringing the AP, DNS and server up and down (twomes.portal_up), reading the request
# (twomes.portal_rd), a page's head (twomes.portal_head) and body (twomes.portal_page), the other GETs
# (twomes.portal_get) and the POSTs (twomes.portal_req) are imported when needed and dropped again,
# never two of them at once. Bounds:
# request head <= 1536 bytes (the size of the buffer; 431), body <= 1024 bytes (413), whole request
# within request_ms (408), one request read at a time, into one preallocated buffer (taken only once
# the client sends its first byte; others wait or get a 503).
import asyncio
import json

from micropython import const

from twomes import Record, unload, wifi
from twomes.log import log

_REQUEST_MS = const(5000)
_SLOT_WAIT_MS = const(2000)
_NETS_MAX = const(30)
_WRITE_MS = const(10000)  # time for an answer once the request is read
_BUSY = b'<meta http-equiv="refresh" content="2"><p>Busy, one moment&hellip;</p>'
INVALID = "invalid"  # result of credentials the controller refused (its ValueError text is the reason)
JSON = "application/json"
HTML = "text/html; charset=utf-8"
# reason phrases of the statuses the portal sends (one string: a table would cost an object per entry)
_REASONS = (
    "\n200 OK\n202 Accepted\n302 Found\n303 See Other\n400 Bad Request\n403 Forbidden\n404 Not Found"
    "\n405 Method Not Allowed\n408 Request Timeout\n409 Conflict\n411 Length Required\n413 Content Too Large"
    "\n415 Unsupported Media Type\n431 Request Header Fields Too Large\n503 Service Unavailable\n"
)


class HttpError(Exception):
    """args: (status, message). Status 0: the client went away, answer nothing."""


def send(w, status, ctype=None, body=b"", head=False, where=None):
    """Status line, headers and `body` (None: the caller streams the body; it ends at close). `where`:
    a redirect's Location. Written in pieces as they come: the head is never built as one string
    (each += would allocate a longer one, up to ~350 bytes, in the portal's tightest moments)."""
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
    # chained (not a loop over a table of pairs): cheaper in the heap
    return (
        s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


async def fill(reader, buf, n):
    """Read more bytes into buf[n:]; returns how many (0 at end of stream)."""
    if hasattr(reader, "readinto"):  # MicroPython streams: no allocation
        return await reader.readinto(memoryview(buf)[n:]) or 0
    data = await reader.read(len(buf) - n)  # CPython asyncio
    buf[n : n + len(data)] = data
    return len(data)


class Portal:
    def __init__(self, board, ident, cfg, ctl, buf=None):
        """`buf`: the request buffer (its size bounds the request head), allocated early by the caller
        (a fragmented heap may not have room for it later); None: portal_up.start allocates it."""
        self.board = board
        self.ident = ident
        self.cfg = cfg
        self.ctl = ctl
        self.request_ms = _REQUEST_MS  # whole-request read limit (tests shorten it)
        self.origin = ""
        self.hosts = ()
        self.job = self.job_ssid = self.result = self.rescan_at = self._dns = self._server = self._reaper = (
            None
        )
        self._buf = buf
        # job: the running credential test (a task); result: (ssid, code, text) of the last one;
        # _buf: the request buffer while no request holds it; _reqs: the requests being served (each with its task);
        # _reaper: the task of reap()
        self._reqs = []
        self._last = board.ticks_ms()

    async def start(self):
        """AP, DNS and HTTP server up (twomes.portal_up: loaded for this and dropped again)."""
        from twomes import portal_up

        try:
            await portal_up.start(self)
        finally:
            portal_up = None
            self._drop()

    async def stop(self):
        """Server, requests, credential test, DNS and AP down."""
        from twomes import portal_up

        try:
            await portal_up.stop(self)
        finally:
            portal_up = None
            self._drop()

    def serving(self):
        """False once the HTTP server's accept loop has ended by itself (a MemoryError while taking a
        connection kills it in MicroPython's asyncio): the portal would then refuse every phone."""
        t = getattr(self._server, "task", None)  # MicroPython's asyncio.Server; CPython's has none
        return t is None or not t.done()

    def idle_ms(self):
        return self.board.ticks_diff(self.board.ticks_ms(), self._last)

    async def test(self, ssid, password, name):
        """The credential test (a task; lives in this resident module so that the request module can
        be dropped while it runs): ctl.submit's answer becomes the result the pages and API show."""
        code, text = wifi.FAILED, wifi.REASONS[wifi.FAILED]
        try:
            code = await self.ctl.submit(ssid, password, name)
            text = wifi.REASONS.get(code, str(code))
        except ValueError as e:
            code, text = INVALID, str(e)
        except Exception as e:  # noqa: BLE001 - task boundary: the page must get an answer
            code = wifi.FAILED
            log("portal", "submit failed: %r" % e)
        finally:
            # whatever happened (even no heap for the log line): the test is over and has a result,
            # so the page stops waiting and a new test can start
            password = None
            self.job = None
            self.result = (ssid, code, text)
        log("portal", "network %r: %s" % (ssid, text))

    def networks(self):
        """The controller's scan list, strongest first, at most _NETS_MAX."""
        return sorted(self.ctl.nets or (), key=lambda n: -n[1])[:_NETS_MAX]

    async def reap(self):
        """The clock of the portal's connections (a task while the portal is up): a request past its
        time is cancelled, and answered 408 if it was still being read. One task for all of them
        costs less heap than a timeout around each wait (asyncio.wait_for: a task and a closure per
        call, ~0.6 KB each on the unix port, with a browser's idle spare connections at once)."""
        b = self.board
        while True:
            await asyncio.sleep(0.25)  # a literal: one float for good
            now = b.ticks_ms()
            for req in self._reqs:
                if b.ticks_diff(now, req.until) >= 0:
                    req.until = b.ticks_add(now, 1000)  # its answer (or its end) gets a second
                    req.task.cancel()
            req = None  # or this task keeps the last request (its task, frame and modules) alive

    async def _conn(self, reader, w):
        """One connection = one request (Connection: close), within the time reap() holds it to."""
        board = self.board
        t0 = board.ticks_ms()
        req = Record()  # what read_request finds; `answered` once a response has been started
        req.path = "/"
        req.method = req.query = req.host = req.ctype = req.length = ""
        req.origin = None
        req.body = b""
        req.answered = False
        req.task = asyncio.current_task()
        req.until = board.ticks_add(t0, self.request_ms)  # the whole request read by then
        self._reqs.append(req)
        buf = None
        try:
            # nothing is held for a client until it speaks (browsers open idle spare connections)
            try:
                first = await reader.read(1)
                if not first:
                    return
                while self._buf is None and board.ticks_diff(board.ticks_ms(), t0) < _SLOT_WAIT_MS:
                    await asyncio.sleep(0.02)
                buf = self._buf
                if buf is None:
                    raise HttpError(503, "busy, try again")
                self._buf = None
                buf[0] = first[0]
                from twomes import portal_rd

                try:
                    await portal_rd.read_request(reader, buf, req, 1)
                finally:
                    portal_rd = None
                    self._drop()  # the request is read: the reader leaves before what answers it comes
            except asyncio.CancelledError:
                if self._server is None:
                    raise  # the portal stops
                raise HttpError(408, "request too slow") from None
            self._last = board.ticks_ms()
            req.until = board.ticks_add(self._last, _WRITE_MS)
            path = req.path
            get = req.method in ("GET", "HEAD")
            if get and req.host not in self.hosts and path[:5] != "/api/":
                req.answered = True  # probes (foreign names): the cheap answer, nothing else loaded
                send(w, 302, where=self.origin + "/")
            else:
                error = None
                if get and (path == "/" or path == "/result" and (self.job or self.result)):
                    error = ()  # the page itself
                elif req.method == "POST":
                    from twomes import portal_req

                    # None: answered; else (reason, ssid, name): the form again with the reason
                    error = await portal_req.handle(self, req, w)
                    portal_req = None
                    self._drop()  # before the page module comes in: never both in the heap
                else:
                    from twomes import portal_get

                    await portal_get.handle(self, req, w)
                if error is not None:
                    await self._page(w, req, error)
            await w.drain()
        except HttpError as e:
            status = e.args[0]
            if status and not req.answered:
                req.until = board.ticks_add(board.ticks_ms(), 1000)
                msg = e.args[1]
                if req.path[:5] == "/api/":
                    send(w, status, JSON, json.dumps({"error": msg}).encode())
                else:
                    send(w, status, "text/plain; charset=utf-8", ("%d %s\n" % (status, msg)).encode())
                try:
                    await w.drain()
                    if buf is not None:  # drop what the client still sends, or closing resets the answer
                        req.until = board.ticks_add(board.ticks_ms(), 200)  # what comes at once
                        for _ in range(4):
                            if not await fill(reader, buf, 0):
                                break
                except BaseException:  # noqa: BLE001 - best effort, for its second at most
                    pass
        except MemoryError:
            # no heap for this answer just now (a credential test, other phones): the phone's browser
            # gets a page that reloads itself in a moment rather than an error page, which ends its
            # captive-portal window or leaves the user stranded
            self._drop()
            req.until = board.ticks_add(board.ticks_ms(), 1000)
            try:
                if req.answered:  # mid-page: browsers follow a refresh in the body too
                    w.write(_BUSY)
                elif req.path[:5] == "/api/":
                    send(w, 503, JSON, b'{"error": "busy, try again"}')
                else:
                    send(w, 503, HTML, _BUSY)
                await w.drain()
                log("portal", "out of memory for %s: asked to come again" % req.path)
            except BaseException:  # noqa: BLE001 - best effort, for its second at most
                pass
        except Exception as e:  # noqa: BLE001 - request boundary: one bad client never stops the portal
            log("portal", "request failed: %r" % e)
        finally:
            if buf is not None and self._server is not None:
                self._buf = buf
            req.until = board.ticks_add(board.ticks_ms(), 1000)
            try:
                w.close()
                await w.wait_closed()
            except BaseException:  # noqa: BLE001 - the peer may already be gone; or its second is up
                pass
            self._reqs.remove(req)
            self._drop()

    async def _page(self, w, req, error):
        """An HTML page. /result: whole from twomes.portal_res (small: what a phone reloads during a
        credential test). The form: the box about a credential test (twomes.portal_res), the head with
        the style (twomes.portal_head), the body (twomes.portal_page), one module each, never two in
        the heap. The first module comes in before the status is sent: without heap for it the phone
        gets the busy page."""
        if req.path == "/result":
            from twomes import portal_res

            req.answered = True
            send(w, 200, HTML, None)
            if req.method != "HEAD":
                portal_res.page(self, w)
            return
        msg = None
        if not error and (self.job is not None or self.result is not None):
            from twomes import portal_res

            msg = portal_res.box(self, False)
            portal_res = None
            self._drop()
        from twomes import portal_head

        req.answered = True
        send(w, 400 if error else 200, HTML, None)
        if req.method == "HEAD":
            return
        portal_head.head(w)
        portal_head = None
        await w.drain()
        self._drop()  # the style leaves the heap before the body's module comes in
        from twomes import portal_page

        await portal_page.page(self, w, error, msg)

    def _drop(self):
        """Forget the per-request modules (held only while a request is served), portal_up, and the
        credential rule (twomes.creds: the controller and portal_req import it when they need it)."""
        unload(
            "portal_rd",
            "portal_req",
            "portal_form",
            "portal_get",
            "portal_res",
            "portal_head",
            "portal_page",
            "portal_up",
            "creds",
        )
