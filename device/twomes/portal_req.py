# The portal's POST requests: the one that acts (the Wi-Fi form or the app's JSON; the form's decoding
# is twomes.portal_form, loaded only for a form).
# Imported per request and dropped again by twomes.portal, so none of it stays in the heap while the
# portal idles. A form with refused input is not answered here: handle() returns the reason and
# twomes.portal shows the form again once this module is gone (never both in the heap).
import asyncio
import json

from micropython import const

from twomes import creds
from twomes.log import log
from twomes.portal import JSON, HttpError, send

_NAME_MAX = const(32)


async def handle(p, req, w):
    """Answer the POST `req` on `w`; returns None, or (reason, ssid, name) when the form must show a
    refusal."""
    path = req.path
    api = path[:5] == "/api/"
    if not api and req.host not in p.hosts:
        req.answered = True
        send(w, 302, where=p.origin + "/")
        return None
    if req.origin is not None and req.origin != "null" and req.origin != p.origin:
        raise HttpError(403, "foreign origin")
    if path != "/connect" and path != "/api/wifi":
        raise HttpError(404, "nothing to post here")
    # the one place that acts: credentials from the form or the app, tested by the controller
    if api:
        if not req.ctype.startswith(JSON):
            raise HttpError(415, "expected application/json")
        try:
            d = json.loads(req.body)
        except ValueError:
            raise HttpError(400, "invalid JSON") from None
        if not isinstance(d, dict):
            raise HttpError(400, "expected a JSON object")
    else:
        if not req.ctype.startswith("application/x-www-form-urlencoded"):
            raise HttpError(415, "expected a form")
        from twomes import portal_form  # the form's decoding: not in the heap for the app's JSON

        try:
            d = portal_form.parse_form(req.body, ("ssid", "other", "password", "name"))
        except ValueError:
            raise HttpError(400, "the form could not be decoded") from None
        portal_form = None
        d["ssid"] = d.get("other") or d.get("ssid", "")
    req.body = None
    ssid = d.get("ssid")
    password = d.get("password", "")
    name = d.get("name")
    d = None
    if not isinstance(ssid, str) or not isinstance(password, str) or not isinstance(name, (str, type(None))):
        raise HttpError(400, "ssid, password and name must be strings")
    name = (name.strip() or None) if name else None
    bad = creds.check_credentials(ssid, password)
    if bad is None and name and len(name.encode()) > _NAME_MAX:
        bad = "the device name must be at most 32 bytes"
    if bad is not None:
        if api:
            raise HttpError(400, bad)
        return bad, ssid, name
    if p.job is None:
        p.job_ssid = ssid
        p.result = None
        p.job = asyncio.create_task(p.test(ssid, password, name))
        log("portal", "testing network %r (password: stored)" % ssid)
    elif api:
        raise HttpError(409, "already testing a network")
    password = None
    req.answered = True
    if api:
        send(w, 202, JSON, b'{"accepted": true, "status": "/api/status"}')
    else:
        send(w, 303, where="/result")
    return None
