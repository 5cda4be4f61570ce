# The JSON API for a provisioning app (docs/api.md): GET /api/info, /api/status, /api/networks
# (?refresh=1 rescans), POST /api/wifi. Errors are JSON too ({"error": ...}, by the portal). Every body
# is built before the status line goes out (an answer is complete or not started); the network list is
# streamed entry by entry.
import json

from twomes.ap import creds
from twomes.ap.httpd import JSON, HttpError, send


def _answer(req, w, status, obj):
    body = json.dumps(obj).encode()  # first: a MemoryError here still gets the portal's whole 503
    req.answered = True
    send(w, status, JSON, body, req.head)


async def info(p, req, w):
    _answer(req, w, 200, p.ctl.info())


async def status(p, req, w):
    _answer(req, w, 200, p.ctl.status())


async def networks(p, req, w):
    ctl = p.ctl
    if "refresh=1" in req.query.split("&"):
        await ctl.rescan()
    req.answered = True
    send(w, 200, JSON, None, req.head)
    if req.head:
        return
    w.write(b'{"networks": [')
    first = True
    for ssid, rssi, secured in creds.listed(ctl.nets):
        if not first:
            w.write(b", ")
        first = False
        w.write(json.dumps({"ssid": ssid, "rssi": rssi, "secured": secured}).encode())
        await w.drain()
    w.write(b'], "more": %d}' % ctl.more)


async def wifi(p, req, w):
    """POST /api/wifi {"ssid", "password", "name"?}: 202 and the test runs (poll /api/status)."""
    if not req.ctype.startswith(JSON):
        raise HttpError(415, "expected application/json")
    if not creds.utf8_ok(req.body):
        raise HttpError(400, "not UTF-8")
    try:
        d = json.loads(req.body)
    except ValueError:
        raise HttpError(400, "invalid JSON") from None
    req.body = None
    if not isinstance(d, dict):
        raise HttpError(400, "expected a JSON object")
    ssid = d.get("ssid")
    password = d.get("password", "")
    name = d.get("name")
    d = None
    if not isinstance(ssid, str) or not isinstance(password, str) or not isinstance(name, (str, type(None))):
        raise HttpError(400, "ssid, password and name must be strings")
    name = (name.strip() or None) if name else None
    bad = creds.check(ssid, password, name)
    if bad is not None:
        raise HttpError(400, bad)
    if p.ctl.testing is not None:
        raise HttpError(409, "already testing a network")
    try:
        p.ctl.start(ssid, password, name)
    except ValueError as e:
        raise HttpError(400, str(e)) from None
    password = None
    _answer(req, w, 202, {"accepted": True, "status": "/api/status"})
