# The portal's GET/HEAD requests other than the pages: the JSON API for a provisioning app (info,
# status, networks), the rescan, and redirects to the form; other methods are refused. Imported per
# request and dropped again by twomes.portal. Kept apart from the POST handling (twomes.portal_req):
# an app polls /api/status while a credential test runs, and only this small module is loaded for it.
import json

from micropython import const

from twomes.log import log
from twomes.portal import JSON, HttpError, send

_RESCAN_MIN_MS = const(10000)


async def handle(p, req, w):
    path = req.path
    method = req.method
    if method != "GET" and method != "HEAD":
        raise HttpError(405, "method not allowed")
    if path == "/rescan" or path == "/api/networks" and "refresh=1" in req.query.split("&"):
        # ctl.rescan(), at most every _RESCAN_MIN_MS (a scan costs the chip about two seconds)
        now = p.board.ticks_ms()
        if p.rescan_at is None or p.board.ticks_diff(now, p.rescan_at) >= _RESCAN_MIN_MS:
            p.rescan_at = now
            try:
                await p.ctl.rescan()
            except Exception as e:  # noqa: BLE001 - the old list stays
                log("portal", "rescan failed: %r" % e)
    if path == "/api/info":
        obj = p.ctl.info()
    elif path == "/api/status":
        obj = status(p)
    elif path == "/api/networks":
        obj = {"networks": [{"ssid": s, "rssi": r, "secured": sec} for s, r, sec in p.networks()]}
    elif path[:5] == "/api/" or path == "/favicon.ico":
        raise HttpError(404, "not found")
    else:  # our pages' helpers, and any other path (the probes' URLs on our own address too): the form
        req.answered = True
        if path == "/rescan" or path == "/result":
            send(w, 303, where="/")
        else:
            send(w, 302, where=p.origin + "/")
        return
    req.answered = True
    send(w, 200, JSON, json.dumps(obj).encode(), method == "HEAD")


def status(p):
    """ctl.status() plus the portal's view: busy (a test running) and the last result."""
    st = dict(p.ctl.status())
    st["busy"] = p.job is not None
    st["result_ssid"], st["result"], st["result_text"] = p.result or (None, None, None)
    return st
