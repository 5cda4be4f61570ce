# The setup access point: captive DNS + a small HTTP server with the Wi-Fi form (no JavaScript) and a
# JSON API for a provisioning app. Phones' captive-portal probes get a 302 to the form, so the setup page
# pops up by itself. Only a deliberate POST (form or API) acts; it hands the credentials to the app's
# controller (ctl.submit), which tests them while the AP stays up. The app decides when to close.
#
# Bounds: request head <= _HEAD_MAX bytes (431), body <= _BODY_MAX (413), whole request within
# request_ms (408), at most _SLOTS requests at a time, each in its own preallocated buffer.
import asyncio
import json

from micropython import const

from twomes import httpserv, wifi
from twomes.httpserv import HttpError, escape
from twomes.log import log

_HEAD_MAX = const(2048)
_BODY_MAX = const(1024)
_SLOTS = const(3)
_REQUEST_MS = const(5000)
_WRITE_MS = const(10000)
_SLOT_WAIT_MS = const(2000)
_RESCAN_MIN_MS = const(10000)
_NETS_MAX = const(30)
_NAME_MAX = const(32)
INVALID = "invalid"  # result code of credentials the controller refused (ValueError)

# what a captive-portal probe asks for (any host): answered with a redirect to the portal
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

_CSS = (
    b"<style>"
    b"body{margin:0;font:16px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;"
    b"background:#eef1f5;color:#18212d}"
    b"main{max-width:30em;margin:0 auto;padding:1em 1em 2em}"
    b"h1{font-size:1.45em;margin:.3em 0 .1em}h2{font-size:1.05em;margin:0 0 .4em}"
    b".sub{color:#5a6676;margin:0 0 1em;font-size:.9em}"
    b".card{background:#fff;border-radius:14px;padding:1em;margin:0 0 1em;box-shadow:0 1px 3px #0002}"
    b".net{display:flex;align-items:center;gap:.7em;padding:.75em .1em;border-bottom:1px solid #e5e9ef}"
    b".net:last-of-type{border:0}.net span{flex:1;overflow-wrap:anywhere}"
    b".net input{width:1.2em;height:1.2em;margin:0;accent-color:#0b63c4}"
    b"label.f{display:block;font-weight:600;font-size:.9em;margin-top:.6em}"
    b"input.t{display:block;width:100%;box-sizing:border-box;font:inherit;font-weight:400;padding:.7em;"
    b"margin:.3em 0 .2em;border:1px solid #bcc5d1;border-radius:9px;background:#fff}"
    b"button{width:100%;font:inherit;font-weight:600;padding:.85em;margin-top:.8em;border:0;"
    b"border-radius:9px;background:#0b63c4;color:#fff}"
    b"a{color:#0b63c4}.rf{display:inline-block;margin-top:.6em;font-size:.9em}"
    b".none{color:#5a6676}.hint{color:#5a6676;font-size:.85em;margin:.2em 0}"
    b".b{display:inline-flex;align-items:flex-end;gap:2px;height:15px}"
    b".b i{width:4px;background:#cdd4de;border-radius:1px}"
    b".b i:nth-child(1){height:30%}.b i:nth-child(2){height:55%}.b i:nth-child(3){height:80%}"
    b".b i:nth-child(4){height:100%}"
    b".s1 i:nth-child(-n+1),.s2 i:nth-child(-n+2),.s3 i:nth-child(-n+3),.s4 i{background:#18212d}"
    b".lk{display:inline-block;position:relative;width:10px;height:8px;margin:6px 2px 0;"
    b"background:#5a6676;border-radius:2px}"
    b".lk:before{content:'';position:absolute;left:2px;top:-6px;width:3px;height:5px;"
    b"border:1.5px solid #5a6676;border-bottom:0;border-radius:4px 4px 0 0}"
    b".op{width:14px}"
    b".msg{border-radius:10px;padding:.8em 1em;margin:0 0 1em}"
    b".ok{background:#dff5e6;color:#0f5129}.bad{background:#fde5e5;color:#7a1c1c}"
    b".wait{background:#e3eefc;color:#133e73}"
    b".foot{color:#8793a3;font-size:.8em;text-align:center}"
    b"</style>"
)
_HEAD1 = (
    b'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
    b'<meta name="viewport" content="width=device-width,initial-scale=1">'
)
_HEAD2 = b"</head><body><main>"
_TAIL = b"</main></body></html>"
_FORM1 = (
    b'<form method="post" action="/connect" accept-charset="utf-8">'
    b'<div class="card"><h2>Choose your Wi-Fi network</h2>'
)
_FORM2 = (
    b'<a class="rf" href="/rescan">Refresh list</a>'
    b'<label class="f">Not in the list? Network name'
    b'<input class="t" type="text" name="other" maxlength="32" autocapitalize="none" autocorrect="off" '
    b'spellcheck="false" placeholder="hidden network"></label></div>'
    b'<div class="card"><label class="f">Wi-Fi password'
    b'<input class="t" type="password" name="password" maxlength="64" autocapitalize="none" '
    b'autocorrect="off" spellcheck="false" autocomplete="off"></label>'
    b'<p class="hint">Leave empty for an open network.</p>'
    b'<label class="f">Device name <span class="hint">(optional)</span>'
    b'<input class="t" type="text" name="name" maxlength="32" value="'
)
_FORM3 = b'"></label><button type="submit">Connect</button></div></form>'
_LOCK = b'<i class="lk" title="secured"></i>'
_OPEN = b'<i class="op" title="open"></i>'
_JSON = "application/json"
_HTML = "text/html; charset=utf-8"


def _bars(rssi):
    return 4 if rssi >= -55 else 3 if rssi >= -67 else 2 if rssi >= -77 else 1


class _Out:
    """The response of one request: status line + headers, then body pieces (dropped for HEAD)."""

    def __init__(self, writer, head):
        self.w = writer
        self.head = head
        self.status = 0

    def start(self, status, ctype=None, length=-1, extra=""):
        self.status = status
        h = "HTTP/1.1 %d %s\r\nConnection: close\r\nCache-Control: no-store\r\n" % (
            status,
            httpserv.STATUS.get(status, "Error"),
        )
        if ctype:
            h += "Content-Type: %s\r\nX-Content-Type-Options: nosniff\r\n" % ctype
        if ctype == _HTML:
            h += "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; form-action 'self'\r\n"
        if length >= 0:
            h += "Content-Length: %d\r\n" % length
        self.w.write((h + extra + "\r\n").encode())

    def body(self, data):
        if not self.head and data:
            self.w.write(data.encode() if isinstance(data, str) else data)

    async def drain(self, ms=_WRITE_MS):
        await asyncio.wait_for(self.w.drain(), ms / 1000)


class Portal:
    def __init__(self, board, ident, cfg, ctl):
        self.board = board
        self.ident = ident
        self.cfg = cfg
        self.ctl = ctl
        self.request_ms = _REQUEST_MS  # whole-request read limit (tests shorten it)
        self.requests = 0
        self._ip = None
        self._port = 0
        self._origin = ""
        self._hosts = ()
        self._dns = None
        self._server = None
        self._free = []
        self._tasks = []
        self._job = None
        self._job_ssid = None
        self._result = None  # (ssid, code, text) of the last submission, kept until the next one
        self._last = board.ticks_ms()
        self._rescan_at = None

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
        self._ip = ip
        self._port = port
        host = ip if port == 80 else "%s:%d" % (ip, port)
        self._origin = "http://" + host
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
            "access point %r up (%s), setup page %s/"
            % (self.ident.name, "open" if self.cfg.ap_open else "WPA2", self._origin),
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
        if self._job is not None:
            self._job.cancel()
            self._job = None
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

    # ---- connections ------------------------------------------------------------------------------
    async def _conn(self, reader, writer):
        task = asyncio.current_task()
        self._tasks.append(task)
        buf = None
        try:
            waited = 0
            while not self._free and waited < _SLOT_WAIT_MS:
                await asyncio.sleep(0.05)
                waited += 50
            if self._free:
                buf = self._free.pop()
                await self._serve(reader, writer, buf)
            elif self._server is not None:
                out = _Out(writer, False)
                self._plain(out, 503, "busy, try again")
                await out.drain(1000)
        except Exception as e:  # noqa: BLE001 - request boundary: one bad client never stops the portal
            log("portal", "request failed: %r" % e)
        finally:
            if buf is not None and self._server is not None:
                self._free.append(buf)
            try:
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 1)
            except Exception:  # noqa: BLE001 - the peer may already be gone
                pass
            if task in self._tasks:
                self._tasks.remove(task)

    async def _serve(self, reader, writer, buf):
        req = httpserv.Request()
        err = None
        try:
            await asyncio.wait_for(httpserv.read_request(reader, buf, _BODY_MAX, req), self.request_ms / 1000)
        except asyncio.TimeoutError:
            err = HttpError(408, "request too slow")
        except HttpError as e:
            err = e
        if err is not None:
            if err.status:
                out = _Out(writer, False)
                self._error(req, out, err.status, err.msg)
                await out.drain(1000)
                await self._discard(reader, buf)
            return
        self.requests += 1
        self._last = self.board.ticks_ms()
        out = _Out(writer, req.method == "HEAD")
        try:
            await self._route(req, out)
        except HttpError as e:
            if not out.status:
                self._error(req, out, e.status, e.msg)
        await out.drain()

    async def _discard(self, reader, buf):
        """Read (and drop) what the client still sends for a moment, so closing does not reset the
        connection before it has read our error answer."""
        try:
            for _ in range(4):
                if not await asyncio.wait_for(httpserv.fill(reader, buf, 0), 0.2):
                    return
        except Exception:  # noqa: BLE001 - best effort
            pass

    # ---- routing ----------------------------------------------------------------------------------
    async def _route(self, req, out):
        path = req.path
        method = req.method
        api = path.startswith("/api/")
        if not api and (req.host not in self._hosts or path in _PROBES):
            self._redirect(out, 302, self._origin + "/")  # probes and foreign names: show the portal
            return
        if method == "GET" or method == "HEAD":
            if path == "/" or path == "/index.html":
                await self._page(out)
            elif path == "/result":
                await self._result_page(out)
            elif path == "/rescan":
                await self._rescan()
                self._redirect(out, 303, "/")
            elif path == "/api/info":
                self._json(out, 200, self.ctl.info())
            elif path == "/api/status":
                self._json(out, 200, self.status())
            elif path == "/api/networks":
                if "refresh=1" in req.query.split("&"):
                    await self._rescan()
                nets = [{"ssid": s, "rssi": r, "secured": sec} for s, r, sec in self._networks()]
                self._json(out, 200, {"networks": nets})
            elif path == "/favicon.ico":
                self._plain(out, 404, "no icon")
            elif api:
                raise HttpError(404, "no such API")
            else:
                self._redirect(out, 302, self._origin + "/")
        elif method == "POST":
            if req.origin is not None and req.origin != "null" and req.origin != self._origin:
                raise HttpError(403, "foreign origin")
            if path == "/connect":
                await self._post_form(req, out)
            elif path == "/api/wifi":
                await self._post_api(req, out)
            else:
                raise HttpError(404, "nothing to post here")
        else:
            raise HttpError(405, "method not allowed")

    def _error(self, req, out, status, msg):
        if req.path.startswith("/api/"):
            self._json(out, status, {"error": msg or httpserv.STATUS.get(status, "error")})
        else:
            self._plain(out, status, msg)

    def _plain(self, out, status, msg):
        text = ("%d %s: %s\n" % (status, httpserv.STATUS.get(status, "Error"), msg)).encode()
        out.start(status, "text/plain; charset=utf-8", len(text))
        out.body(text)

    def _redirect(self, out, status, location):
        out.start(status, None, 0, "Location: %s\r\n" % location)

    def _json(self, out, status, obj):
        data = json.dumps(obj).encode()
        out.start(status, _JSON, len(data))
        out.body(data)

    # ---- state ------------------------------------------------------------------------------------
    def _networks(self):
        nets = list(self.ctl.networks() or ())
        nets.sort(key=lambda n: -n[1])
        return nets[:_NETS_MAX]

    async def _rescan(self):
        now = self.board.ticks_ms()
        if self._rescan_at is not None and self.board.ticks_diff(now, self._rescan_at) < _RESCAN_MIN_MS:
            return
        self._rescan_at = now
        try:
            await self.ctl.rescan()
        except Exception as e:  # noqa: BLE001 - the old list stays
            log("portal", "rescan failed: %r" % e)

    def status(self):
        st = dict(self.ctl.status())
        st["busy"] = self._job is not None
        r = self._result
        st["result"] = r[1] if r else None
        st["result_ssid"] = r[0] if r else None
        st["result_text"] = r[2] if r else None
        return st

    def _start_job(self, ssid, password, name):
        self._job_ssid = ssid
        self._result = None
        self._job = asyncio.create_task(self._run_job(ssid, password, name))
        log("portal", "testing network %r (password: stored)" % ssid)

    async def _run_job(self, ssid, password, name):
        try:
            code = await self.ctl.submit(ssid, password, name)
            text = wifi.REASONS.get(code, str(code))
        except ValueError as e:
            code, text = INVALID, str(e)
        except Exception as e:  # noqa: BLE001 - task boundary: the page must get an answer
            log("portal", "submit failed: %r" % e)
            code, text = wifi.FAILED, wifi.REASONS[wifi.FAILED]
        password = None
        self._result = (ssid, code, text)
        self._job = None
        log("portal", "network %r: %s" % (ssid, text))

    def _check(self, ssid, password, name):
        bad = wifi.check_credentials(ssid, password)
        if bad is None and name is not None and len(name.encode()) > _NAME_MAX:
            bad = "the device name must be at most 32 bytes"
        return bad

    # ---- POST -------------------------------------------------------------------------------------
    async def _post_form(self, req, out):
        if not req.ctype.startswith("application/x-www-form-urlencoded"):
            raise HttpError(415, "expected a form")
        try:
            f = httpserv.parse_form(req.body, ("ssid", "other", "password", "name"))
        except ValueError:
            raise HttpError(400, "the form could not be decoded") from None
        ssid = f.get("other") or f.get("ssid") or ""
        password = f.get("password", "")
        name = f.get("name", "").strip() or None
        bad = self._check(ssid, password, name)
        if bad is not None:
            await self._page(out, 400, bad, ssid, name)
            return
        if self._job is None:
            self._start_job(ssid, password, name)
        self._redirect(out, 303, "/result")

    async def _post_api(self, req, out):
        if not req.ctype.startswith(_JSON):
            raise HttpError(415, "expected application/json")
        try:
            d = json.loads(req.body)
        except ValueError:
            raise HttpError(400, "invalid JSON") from None
        if not isinstance(d, dict):
            raise HttpError(400, "expected a JSON object")
        ssid = d.get("ssid")
        password = d.get("password", "")
        name = d.get("name")
        if not isinstance(ssid, str) or not isinstance(password, str):
            raise HttpError(400, "ssid and password must be strings")
        if name is not None and not isinstance(name, str):
            raise HttpError(400, "name must be a string")
        name = (name.strip() or None) if name is not None else None
        bad = self._check(ssid, password, name)
        if bad is not None:
            raise HttpError(400, bad)
        if self._job is not None:
            raise HttpError(409, "already testing a network")
        self._start_job(ssid, password, name)
        self._json(out, 202, {"accepted": True, "status": "/api/status"})

    # ---- pages ------------------------------------------------------------------------------------
    def _begin(self, out, status, title, refresh=None):
        out.start(status, _HTML)
        out.body(_HEAD1)
        if refresh:
            out.body('<meta http-equiv="refresh" content="%s">' % refresh)
        out.body("<title>%s</title>" % escape(title))
        out.body(_CSS)
        out.body(_HEAD2)

    def _end(self, out):
        info = self.ctl.info()
        out.body(
            '<p class="foot">%s &middot; %s &middot; firmware %s</p>'
            % (
                escape(self.ident.name),
                escape(str(info.get("device_type", ""))),
                escape(str(info.get("version", ""))),
            )
        )
        out.body(_TAIL)

    def _heading(self, out):
        out.body(
            '<h1>Wi-Fi setup</h1><p class="sub">Connect <b>%s</b> to the Internet</p>'
            % escape(self.ident.name)
        )

    async def _page(self, out, status=200, error=None, chosen=None, name=None):
        self._begin(out, status, "Wi-Fi setup")
        self._heading(out)
        if error:
            out.body('<div class="msg bad">%s</div>' % escape(error))
        elif self._job is not None:
            out.body(
                '<div class="msg wait">Testing <b>%s</b>&hellip; <a href="/result">see the result</a></div>'
                % escape(self._job_ssid)
            )
        elif self._result is not None:
            self._result_box(out)
        out.body(_FORM1)
        await out.drain()
        nets = self._networks()
        if not nets:
            out.body('<p class="none">No networks found.</p>')
        for ssid, rssi, secured in nets:
            e = escape(ssid)
            out.body(
                '<label class="net"><input type="radio" name="ssid" value="%s"%s><span>%s</span>'
                % (e, " checked" if ssid == chosen else "", e)
            )
            out.body(_LOCK if secured else _OPEN)
            out.body(
                '<b class="b s%d" title="%d dBm"><i></i><i></i><i></i><i></i></b></label>'
                % (_bars(rssi), rssi)
            )
        nets = None
        out.body(_FORM2)
        if name:
            out.body(escape(name))
        out.body(_FORM3)
        self._end(out)

    def _result_box(self, out):
        ssid, code, text = self._result
        e = escape(ssid)
        if code == wifi.JOINED:
            out.body(
                '<div class="msg ok"><b>Connected to %s.</b> The device keeps this network and closes its '
                "setup network in a few seconds. You can reconnect your phone to your usual Wi-Fi.</div>" % e
            )
            return
        if code == wifi.WRONG_PASSWORD:
            why = "The password for <b>%s</b> was not accepted. Check it and try again." % e
        elif code == wifi.NOT_FOUND:
            why = "The network <b>%s</b> was not found. Is the router on and within reach?" % e
        elif code == wifi.TIMEOUT:
            why = "<b>%s</b> did not answer in time. Move closer to the router and try again." % e
        elif code == INVALID:
            why = "%s: %s." % (e, escape(text))
        else:
            why = "Could not connect to <b>%s</b> (%s). Try again." % (e, escape(text))
        out.body('<div class="msg bad">%s</div>' % why)

    async def _result_page(self, out):
        if self._job is None and self._result is None:
            self._redirect(out, 303, "/")
            return
        if self._job is not None:
            self._begin(out, 200, "Testing...", "3;url=/result")
            self._heading(out)
            out.body(
                '<div class="msg wait"><b>Testing %s&hellip;</b><br>This takes up to half a minute. '
                "Your phone may lose the connection to <b>%s</b> meanwhile: if so, reconnect to it and "
                'this page shows the result.</div><p><a href="/result">Check again</a></p>'
                % (escape(self._job_ssid), escape(self.ident.name))
            )
        else:
            self._begin(out, 200, "Wi-Fi setup")
            self._heading(out)
            self._result_box(out)
            if self._result[1] != wifi.JOINED:
                out.body('<p><a href="/">Try again</a></p>')
        self._end(out)
