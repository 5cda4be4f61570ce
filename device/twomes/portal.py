# The setup access point: captive DNS + a small HTTP server with the Wi-Fi form (no JavaScript) and a
# JSON API for a provisioning app. Phones' captive-portal probes get a 302 to the form, so the setup page
# pops up by itself. Only a deliberate POST (form or API) acts: it hands the credentials to the app's
# controller (ctl.submit), which tests them while the AP stays up. The app decides when to close.
#
# Heap: this module is what stays loaded while the portal runs (AP, DNS, accept, bounded read, probe
# redirect). Pages (twomes.portal_page) and the API/POST handling (twomes.portal_req) are imported per
# request and dropped again after it. Bounds: request head <= _HEAD_MAX bytes (431), body <= _BODY_MAX
# (413), whole request within request_ms (408), at most _SLOTS requests read at a time, each into its
# own preallocated buffer (taken only once the client sends its first byte).
import asyncio
import json
import sys

from micropython import const

from twomes import httpserv
from twomes.httpserv import HttpError
from twomes.log import log

_HEAD_MAX = const(2048)
_BODY_MAX = const(1024)
_SLOTS = const(1)
_REQUEST_MS = const(5000)
_SLOT_WAIT_MS = const(2000)
_NETS_MAX = const(30)
_WRITE_S = 10
INVALID = "invalid"  # result of credentials the controller refused (its ValueError text is the reason)
JSON = "application/json"
HTML = "text/html; charset=utf-8"


def send(w, status, ctype=None, body=b"", head=False, extra=""):
    """Status line, headers and `body` (None: the caller streams the body; it ends at close)."""
    h = "HTTP/1.1 %d %s\r\nConnection: close\r\nCache-Control: no-store\r\n" % (
        status,
        httpserv.reason(status),
    )
    if ctype:
        h += "Content-Type: %s\r\nX-Content-Type-Options: nosniff\r\n" % ctype
        if ctype is HTML:  # nothing but the inline CSS may run or load
            h += "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; form-action 'self'\r\n"
    if body is not None:
        h += "Content-Length: %d\r\n" % len(body)
    w.write((h + extra + "\r\n").encode())
    if body and not head:
        w.write(body)


def redirect(w, status, where):
    send(w, status, None, b"", False, "Location: %s\r\n" % where)


class Portal:
    def __init__(self, board, ident, cfg, ctl):
        self.board = board
        self.ident = ident
        self.cfg = cfg
        self.ctl = ctl
        self.request_ms = _REQUEST_MS  # whole-request read limit (tests shorten it)
        self.origin = ""
        self.hosts = ()
        self.job = self.job_ssid = self.result = self.rescan_at = self._dns = self._server = None
        # job: the running credential test (a task); result: (ssid, code, text) of the last one
        self._free = []
        self._tasks = []
        self._last = board.ticks_ms()

    async def start(self):
        board = self.board
        ap = board.ap
        name = self.ident.name
        ap.active(True)
        if self.cfg.ap_open:
            ap.config(essid=name, authmode=getattr(board.network, "AUTH_OPEN", 0))
        else:
            ap.config(
                essid=name,
                password=self.ident.ap_password,
                authmode=getattr(board.network, "AUTH_WPA2_PSK", 3),
            )
        ip = board.ap_ip()
        port = board.portal_port()
        host = ip if port == 80 else "%s:%d" % (ip, port)
        self.origin = "http://" + host
        self.hosts = (host, ip) if port == 80 else (host,)
        self._last = board.ticks_ms()
        self._free = [bytearray(_HEAD_MAX) for _ in range(_SLOTS)]
        from twomes import captive_dns

        try:
            self._dns = captive_dns.start(ip, board.dns_port())
            self._server = await asyncio.start_server(self._conn, ip, port, backlog=4)
        except BaseException:
            await self.stop()
            raise
        log(
            "portal",
            "access point %r up (%s), page %s/" % (name, "open" if self.cfg.ap_open else "WPA2", self.origin),
        )

    async def stop(self):
        srv = self._server
        self._server = None
        if srv is not None:
            srv.close()
            try:
                await asyncio.wait_for(srv.wait_closed(), 2)
            except (OSError, asyncio.TimeoutError):
                pass
        for t in self._tasks + [self.job]:
            if t is not None:
                t.cancel()
        for _ in range(20):  # let the cancelled handlers run their `finally` (sockets closed)
            if not self._tasks:
                break
            await asyncio.sleep(0.01)
        dns = self._dns
        self.job = self._dns = None
        if dns is not None:
            dns.cancel()
            try:
                await dns  # its `finally` closes the socket
            except asyncio.CancelledError:
                pass
        self._free = []
        try:
            self.board.ap.active(False)
        except OSError:
            pass
        log("portal", "access point down")

    def idle_ms(self):
        return self.board.ticks_diff(self.board.ticks_ms(), self._last)

    async def test(self, ssid, password, name):
        """The credential test (a task; lives in this resident module so that the request module can
        be dropped while it runs): ctl.submit's answer becomes the result the pages and API show."""
        from twomes import wifi

        try:
            code = await self.ctl.submit(ssid, password, name)
            text = wifi.REASONS.get(code, str(code))
        except ValueError as e:
            code, text = INVALID, str(e)
        except Exception as e:  # noqa: BLE001 - task boundary: the page must get an answer
            log("portal", "submit failed: %r" % e)
            code, text = wifi.FAILED, wifi.REASONS[wifi.FAILED]
        password = None
        self.result = (ssid, code, text)
        self.job = None
        log("portal", "network %r: %s" % (ssid, text))

    def networks(self):
        """The controller's scan list, strongest first, at most _NETS_MAX."""
        nets = list(self.ctl.networks() or ())
        nets.sort(key=lambda n: -n[1])
        return nets[:_NETS_MAX]

    async def _conn(self, reader, w):
        """One connection = one request (Connection: close)."""
        task = asyncio.current_task()
        self._tasks.append(task)
        buf = None
        req = httpserv.Request()
        t0 = self.board.ticks_ms()
        try:
            # nothing is held for a client until it speaks (browsers open idle spare connections)
            try:
                first = await asyncio.wait_for(reader.read(1), self.request_ms / 1000)
                if not first:
                    return
                while not self._free and self.board.ticks_diff(self.board.ticks_ms(), t0) < _SLOT_WAIT_MS:
                    await asyncio.sleep(0.02)
                if not self._free:
                    raise HttpError(503, "busy, try again")
                buf = self._free.pop()
                buf[0] = first[0]
                left = self.request_ms - self.board.ticks_diff(self.board.ticks_ms(), t0)
                await asyncio.wait_for(
                    httpserv.read_request(reader, buf, _BODY_MAX, req, 1), max(left, 1) / 1000
                )
            except asyncio.TimeoutError:
                raise HttpError(408, "request too slow") from None
            self._last = self.board.ticks_ms()
            path = req.path
            get = req.method in ("GET", "HEAD")
            if get and req.host not in self.hosts and path[:5] != "/api/":
                req.answered = True  # probes (foreign names): the cheap answer, nothing else loaded
                redirect(w, 302, self.origin + "/")
            elif get and (path == "/" or path == "/result" and (self.job or self.result)):
                from twomes import portal_page

                req.answered = True
                await portal_page.page(self, w, req.method == "HEAD", path == "/result")
            else:
                from twomes import portal_req

                await portal_req.handle(self, req, w)
            await asyncio.wait_for(w.drain(), _WRITE_S)
        except HttpError as e:
            status = e.args[0]
            if status and not req.answered:
                msg = e.args[1]
                if req.path[:5] == "/api/":
                    send(w, status, JSON, json.dumps({"error": msg}).encode())
                else:
                    send(w, status, "text/plain; charset=utf-8", ("%d %s\n" % (status, msg)).encode())
                try:
                    await asyncio.wait_for(w.drain(), 1)
                    if buf is not None:  # drop what the client still sends, or closing resets the answer
                        for _ in range(4):
                            if not await asyncio.wait_for(httpserv.fill(reader, buf, 0), 0.2):
                                break
                except Exception:  # noqa: BLE001 - best effort
                    pass
        except Exception as e:  # noqa: BLE001 - request boundary: one bad client never stops the portal
            log("portal", "request failed: %r" % e)
        finally:
            if buf is not None and self._server is not None:
                self._free.append(buf)
            try:
                w.close()
                await asyncio.wait_for(w.wait_closed(), 1)
            except Exception:  # noqa: BLE001 - the peer may already be gone
                pass
            if task in self._tasks:
                self._tasks.remove(task)
            self._drop()

    def _drop(self):
        """Forget the per-request modules (held only while a request is served)."""
        pkg = sys.modules["twomes"]
        for m in ("portal_req", "portal_page"):
            sys.modules.pop("twomes." + m, None)
            pkg.__dict__.pop(m, None)
