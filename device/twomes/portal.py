# The setup access point: captive DNS + a small HTTP server with the Wi-Fi form (no JavaScript) and a
# JSON API for a provisioning app. Phones' captive-portal probes get a 302 to the form, so the setup page
# pops up by itself. Only a deliberate POST (form or API) acts: it hands the credentials to the app's
# controller (ctl.submit), which tests them while the AP stays up. The app decides when to close.
# This module is what stays loaded while the portal runs (AP, DNS, accept, read, probe redirect); the
# rest of a request is served by twomes.portal_req / portal_page, imported per request and dropped after.
#
# Bounds: request head <= _HEAD_MAX bytes (431), body <= _BODY_MAX (413), whole request within
# request_ms (408), at most _SLOTS requests at a time, each in its own preallocated buffer.
import asyncio
import sys

from micropython import const

from twomes import httpserv
from twomes.httpserv import HttpError
from twomes.log import log

_HEAD_MAX = const(2048)
_BODY_MAX = const(1024)
_SLOTS = const(2)
_REQUEST_MS = const(5000)
_SLOT_WAIT_MS = const(2000)
_WRITE_S = 10
INVALID = "invalid"  # result of credentials the controller refused (its ValueError text is the reason)
JSON = "application/json"
_LAZY = ("portal_req", "portal_page")
# what captive-portal probes ask for (any host): answered with a redirect to the portal
_PROBES = (
    "/generate_204",
    "/gen_204",
    "/hotspot-detect.html",
    "/library/test/success.html",
    "/connecttest.txt",
    "/redirect",
    "/ncsi.txt",
    "/canonical.html",
    "/success.txt",
)


def header(w, status, ctype=None, length=-1, extra=""):
    """Status line and headers (Connection: close: the end of the body is the end of the stream)."""
    h = "HTTP/1.1 %d %s\r\nConnection: close\r\nCache-Control: no-store\r\n" % (
        status,
        httpserv.reason(status),
    )
    if ctype:
        h += "Content-Type: %s\r\nX-Content-Type-Options: nosniff\r\n" % ctype
        if ctype[0] == "t" and ctype[5] == "h":  # text/html: nothing but our inline CSS may run or load
            h += "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; form-action 'self'\r\n"
    if length >= 0:
        h += "Content-Length: %d\r\n" % length
    w.write((h + extra + "\r\n").encode())


def send(w, status, ctype, body, head=False, extra=""):
    header(w, status, ctype, len(body), extra)
    if body and not head:
        w.write(body)


class Portal:
    def __init__(self, board, ident, cfg, ctl):
        self.board = board
        self.ident = ident
        self.cfg = cfg
        self.ctl = ctl
        self.request_ms = _REQUEST_MS  # whole-request read limit (tests shorten it)
        self.origin = ""
        self._hosts = ()
        self._dns = None
        self._server = None
        self._free = []
        self._tasks = []
        self.job = None  # the running credential test (a task)
        self.job_ssid = None
        self.result = None  # (ssid, code, text) of the last submission, kept until the next one
        self._last = board.ticks_ms()
        self.rescan_at = None

    # ---- life cycle -------------------------------------------------------------------------------
    async def start(self):
        board = self.board
        net = board.network
        ap = board.ap
        ap.active(True)
        if self.cfg.ap_open:
            ap.config(essid=self.ident.name, authmode=getattr(net, "AUTH_OPEN", 0))
        else:
            ap.config(
                essid=self.ident.name,
                password=self.ident.ap_password,
                authmode=getattr(net, "AUTH_WPA2_PSK", 3),
            )
        ip = board.ap_ip()
        port = board.portal_port()
        host = ip if port == 80 else "%s:%d" % (ip, port)
        self.origin = "http://" + host
        self._hosts = (host, ip) if port == 80 else (host,)
        self._last = board.ticks_ms()
        self._free = [bytearray(_HEAD_MAX) for _ in range(_SLOTS)]
        from twomes.captive_dns import CaptiveDns

        try:
            self._dns = CaptiveDns(ip, board.dns_port())
            self._dns.start()
            self._server = await asyncio.start_server(self._conn, ip, port, backlog=_SLOTS + 2)
        except BaseException:
            await self.stop()
            raise
        log(
            "portal",
            "access point %r up (%s), page %s/"
            % (self.ident.name, "open" if self.cfg.ap_open else "WPA2", self.origin),
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
        for t in self._tasks:
            t.cancel()
        for _ in range(20):  # let cancelled handlers run their `finally` (sockets closed)
            if not self._tasks:
                break
            await asyncio.sleep(0.01)
        if self.job is not None:
            self.job.cancel()
            self.job = None
        if self._dns is not None:
            await self._dns.stop()
            self._dns = None
        self._free = []
        try:
            self.board.ap.active(False)
        except OSError:
            pass
        log("portal", "access point down")

    def idle_ms(self):
        return self.board.ticks_diff(self.board.ticks_ms(), self._last)

    # ---- one connection = one request -------------------------------------------------------------
    async def _conn(self, reader, w):
        task = asyncio.current_task()
        self._tasks.append(task)
        buf = None
        req = httpserv.Request()
        try:
            waited = 0
            while not self._free and waited < _SLOT_WAIT_MS:
                await asyncio.sleep(0.05)
                waited += 50
            if not self._free:
                raise HttpError(503, "busy, try again")
            buf = self._free.pop()
            try:
                await asyncio.wait_for(
                    httpserv.read_request(reader, buf, _BODY_MAX, req), self.request_ms / 1000
                )
            except asyncio.TimeoutError:
                raise HttpError(408, "request too slow") from None
            self._last = self.board.ticks_ms()
            path = req.path
            if req.method in ("GET", "HEAD") and (
                path in _PROBES or req.host not in self._hosts and path[:5] != "/api/"
            ):
                req.answered = True  # probes and foreign names: the cheap answer, nothing else loaded
                send(w, 302, None, b"", extra="Location: %s/\r\n" % self.origin)
            else:
                from twomes import portal_req

                await portal_req.handle(self, req, w)
            await asyncio.wait_for(w.drain(), _WRITE_S)
        except HttpError as e:
            if e.status and not req.answered:
                self._error(req, w, e.status, e.msg)
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
            import twomes

            for m in _LAZY:  # the request modules are only held while a request is served
                sys.modules.pop("twomes." + m, None)
                twomes.__dict__.pop(m, None)

    def _error(self, req, w, status, msg):
        if req.path.startswith("/api/"):
            import json

            send(w, status, JSON, json.dumps({"error": msg}).encode())
        else:
            send(w, status, "text/plain; charset=utf-8", ("%d %s\n" % (status, msg)).encode())

    def status(self):
        """ctl.status() plus this portal's view: busy (a test running) and the last result."""
        st = dict(self.ctl.status())
        r = self.result or (None, None, None)
        st["busy"] = self.job is not None
        st["result_ssid"], st["result"], st["result_text"] = r
        return st
