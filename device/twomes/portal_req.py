# Everything the portal does for a request besides the probe redirect: the pages (via portal_page),
# the JSON API and the one acting POST (form or app). Imported per request and dropped again by
# twomes.portal, so none of this stays in the heap while the portal idles.
import asyncio
import json

from micropython import const

from twomes import wifi
from twomes.httpserv import HttpError
from twomes.log import log
from twomes.portal import INVALID, JSON, send

_RESCAN_MIN_MS = const(10000)
_NETS_MAX = const(30)
_NAME_MAX = const(32)
_FIELDS_MAX = const(12)


async def handle(p, req, w):
    path = req.path
    api = path[:5] == "/api/"
    if req.method in ("GET", "HEAD"):
        head = req.method == "HEAD"
        if path == "/" or path == "/result" and (p.job or p.result):
            from twomes import portal_page

            req.answered = True
            await portal_page.page(p, w, head, path == "/result")
            return
        if path == "/result" or path == "/rescan":
            if path == "/rescan":
                await rescan(p)
            obj = None
            status = 303
        elif path == "/api/info":
            obj = p.ctl.info()
        elif path == "/api/status":
            obj = p.status()
        elif path == "/api/networks":
            if "refresh=1" in req.query.split("&"):
                await rescan(p)
            obj = {"networks": [{"ssid": s, "rssi": r, "secured": sec} for s, r, sec in networks(p)]}
        elif path == "/favicon.ico":
            raise HttpError(404, "no icon")
        elif api:
            raise HttpError(404, "no such API")
        else:
            obj = None
            status = 302
        req.answered = True
        if obj is None:
            send(w, status, None, b"", extra="Location: %s/\r\n" % (p.origin if status == 302 else ""))
        else:
            send(w, 200, JSON, json.dumps(obj).encode(), head)
    elif req.method == "POST":
        if not api and req.host not in p._hosts:
            req.answered = True
            send(w, 302, None, b"", extra="Location: %s/\r\n" % p.origin)
        elif req.origin is not None and req.origin != "null" and req.origin != p.origin:
            raise HttpError(403, "foreign origin")
        elif path == "/connect" or path == "/api/wifi":
            await _post(p, req, w, api)
        else:
            raise HttpError(404, "nothing to post here")
    else:
        raise HttpError(405, "method not allowed")


async def _post(p, req, w, api):
    """The one place that acts: credentials from the form or the app, tested by the controller."""
    if api:
        if not req.ctype.startswith(JSON):
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
        if (
            not isinstance(ssid, str)
            or not isinstance(password, str)
            or not isinstance(name, (str, type(None)))
        ):
            raise HttpError(400, "ssid, password and name must be strings")
    else:
        if not req.ctype.startswith("application/x-www-form-urlencoded"):
            raise HttpError(415, "expected a form")
        try:
            f = parse_form(req.body, ("ssid", "other", "password", "name"))
        except ValueError:
            raise HttpError(400, "the form could not be decoded") from None
        ssid = f.get("other") or f.get("ssid") or ""
        password = f.get("password", "")
        name = f.get("name")
    name = (name.strip() or None) if name else None
    bad = wifi.check_credentials(ssid, password)
    if bad is None and name and len(name.encode()) > _NAME_MAX:
        bad = "the device name must be at most 32 bytes"
    if bad is not None:
        if api:
            raise HttpError(400, bad)
        from twomes import portal_page

        req.answered = True
        await portal_page.page(p, w, False, False, bad, ssid, name)
        return
    if p.job is None:
        p.job_ssid = ssid
        p.result = None
        p.job = asyncio.create_task(_run_job(p, ssid, password, name))
        log("portal", "testing network %r (password: stored)" % ssid)
    elif api:
        raise HttpError(409, "already testing a network")
    password = None
    req.answered = True
    if api:
        send(w, 202, JSON, b'{"accepted": true, "status": "/api/status"}')
    else:
        send(w, 303, None, b"", extra="Location: /result\r\n")


async def _run_job(p, ssid, password, name):
    try:
        code = await p.ctl.submit(ssid, password, name)
        text = wifi.REASONS.get(code, str(code))
    except ValueError as e:
        code, text = INVALID, str(e)
    except Exception as e:  # noqa: BLE001 - task boundary: the page must get an answer
        log("portal", "submit failed: %r" % e)
        code, text = wifi.FAILED, wifi.REASONS[wifi.FAILED]
    password = None
    p.result = (ssid, code, text)
    p.job = None
    log("portal", "network %r: %s" % (ssid, text))


def networks(p):
    """The controller's scan list, strongest first, at most _NETS_MAX."""
    nets = list(p.ctl.networks() or ())
    nets.sort(key=lambda n: -n[1])
    return nets[:_NETS_MAX]


async def rescan(p):
    now = p.board.ticks_ms()
    if p.rescan_at is not None and p.board.ticks_diff(now, p.rescan_at) < _RESCAN_MIN_MS:
        return
    p.rescan_at = now
    try:
        await p.ctl.rescan()
    except Exception as e:  # noqa: BLE001 - the old list stays
        log("portal", "rescan failed: %r" % e)


# ---- application/x-www-form-urlencoded and HTML -------------------------------------------------
def unquote(b):
    """application/x-www-form-urlencoded value (bytes) -> str: `+` is a space, %XX a byte, then UTF-8.
    A `%` not followed by two hex digits stays as it is; invalid UTF-8 raises ValueError."""
    if b"%" not in b and b"+" not in b:
        return bytes(b).decode()
    out = bytearray()
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c == 43:  # +
            out.append(32)
        elif c == 37 and i + 2 < n and _hex(b[i + 1]) >= 0 and _hex(b[i + 2]) >= 0:
            out.append(_hex(b[i + 1]) * 16 + _hex(b[i + 2]))
            i += 2
        else:
            out.append(c)
        i += 1
    return bytes(out).decode()


def _hex(c):
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


def parse_form(data, keys):
    """{key: str} for the wanted `keys` only (first occurrence wins); ValueError on bad encoding."""
    if isinstance(data, str):
        data = data.encode()
    out = {}
    count = 0
    for pair in data.split(b"&"):
        count += 1
        if count > _FIELDS_MAX:
            raise ValueError("too many fields")
        eq = pair.find(b"=")
        k, v = (pair, b"") if eq < 0 else (pair[:eq], pair[eq + 1 :])
        name = unquote(k)
        if name in keys and name not in out:
            out[name] = unquote(v)
    return out


def escape(s):
    """HTML-escape text for element content and double- or single-quoted attributes."""
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    if '"' in s:
        s = s.replace('"', "&quot;")
    if "'" in s:
        s = s.replace("'", "&#39;")
    return s
