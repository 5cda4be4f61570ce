# Bench material, NOT device code: the device's setup portal (device/twomes/ap: httpd, portal, api, form,
# pages) written again on microdot (pinned in pyproject.toml), for `twomes bench --only portal`, which
# compiles both with mpy-cross and compares their heap on the MicroPython unix port.
#
# Same routes, same page and JSON bodies (the bench checks them byte for byte against the device's),
# same answers for the phone's sequence (captive probe 302, form, scan, POST /connect 303, /result,
# /api/status, POST /api/wifi 202, the same errors as JSON under /api/ and text elsewhere), the same
# controller (twomes.ap.controller) behind it. Written as microdot is meant to be used: handlers
# return whole bodies (str, dict) and microdot parses the request, the form and the JSON.
import json

from microdot import Microdot, Request

from twomes import wifi
from twomes.ap import creds

HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"

_STYLE = (
    "<style>body{margin:0;font:16px/1.4 system-ui,sans-serif;background:#eef1f5;color:#18212d}"
    "main{max-width:30em;margin:auto;padding:1em}h1{font-size:1.4em;margin:.3em 0 0}h2{font-size:1.1em}"
    ".s{color:#5a6676;font-size:.9em}a{color:#0b63c4}"
    ".c{background:#fff;border-radius:14px;padding:.2em 1em 1em;margin:1em 0;box-shadow:0 1px 3px #0002}"
    ".n{display:flex;align-items:center;gap:.7em;padding:.7em 0;border-bottom:1px solid #e5e9ef}"
    ".n span{flex:1;overflow-wrap:anywhere}.n input{width:1.2em;height:1.2em;margin:0}"
    ".f{display:block;font-weight:600;margin-top:.8em}"
    ".t{display:block;width:100%;box-sizing:border-box;font:inherit;padding:.6em;margin:.3em 0;"
    "border:1px solid #bcc5d1;border-radius:9px}"
    "button{width:100%;font:inherit;font-weight:600;padding:.8em;margin-top:1em;border:0;"
    "border-radius:9px;background:#0b63c4;color:#fff}"
    ".g{width:28px;height:6px;background:#cdd4de;border-radius:3px}.g i{display:block;height:6px;"
    "background:#18212d;border-radius:3px}.lk,.op{width:10px;height:8px}"
    ".lk{background:#5a6676;border-radius:2px;position:relative;margin-top:4px}.lk:before{content:'';"
    "position:absolute;left:2px;top:-6px;width:3px;height:5px;border:1.5px solid #5a6676;"
    "border-bottom:0;border-radius:4px 4px 0 0}"
    ".m{border-radius:10px;padding:.8em 1em;margin:1em 0}.ok{background:#dff5e6}.bad{background:#fde5e5}"
    ".w{background:#e3eefc}</style></head><body><main>"
)


def escape(s):
    return (
        s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def make_app(ctl, ident, origin, hosts):
    """The portal as a microdot app: `ctl` the setup controller, `origin` "http://ip:port", `hosts` the
    Host values that are ours (any other gets a redirect to the form: captive-portal probes)."""
    Request.max_content_length = 1024  # the device's body bound (413 beyond)
    app = Microdot()

    def error(request, status, message):
        if request.path[:5] == "/api/":
            return json.dumps({"error": message}), status, {"Content-Type": JSON}
        return "%d %s\n" % (status, message), status, {"Content-Type": TEXT}

    def page(body, status=200):
        return body, status, {"Content-Type": HTML, "Content-Security-Policy": _CSP}

    def to_form():
        return "", 302, {"Location": origin + "/"}

    @app.before_request
    async def captive(request):
        if request.path[:5] != "/api/" and request.headers.get("Host") not in hosts:
            return to_form()
        if request.method == "POST":
            o = request.headers.get("Origin")
            if o is not None and o != "null" and o != origin:
                return error(request, 403, "foreign origin")
        return None

    @app.after_request
    async def common(request, response):
        response.headers["Connection"] = "close"
        response.headers["Cache-Control"] = "no-store"
        if "Content-Type" in response.headers:
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def head(refresh=False):
        return (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Wi-Fi setup</title>'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            + ('<meta http-equiv="refresh" content="3;url=/result">' if refresh else "")
            + _STYLE
            + '<h1>Wi-Fi setup</h1><p class="s">Connect <b>%s</b> to the Internet</p>' % escape(ident.name)
        )

    def box(testing):
        if ctl.testing is not None:
            return (
                "w",
                "<b>Testing %s&hellip;</b> %s"
                % (
                    escape(ctl.testing),
                    "This takes up to half a minute. Your phone may drop off the device's network "
                    "meanwhile: reconnect to it and this page shows the result."
                    if testing
                    else '<a href="/result">See the result</a>',
                ),
            )
        if ctl.result is None:
            return None
        ssid, code, text = ctl.result
        e = escape(ssid)
        if code == wifi.JOINED:
            return (
                "ok",
                "<b>Connected to %s.</b> The device keeps this network and closes its setup network in a "
                "few seconds. Reconnect your phone to your usual Wi-Fi." % e,
            )
        if code == wifi.WRONG_PASSWORD:
            return "bad", "The password for <b>%s</b> was not accepted. Check it and try again." % e
        if code == wifi.NOT_FOUND:
            return "bad", "The network <b>%s</b> was not found. Is the router on and within reach?" % e
        if code == wifi.TIMEOUT:
            return "bad", "<b>%s</b> did not answer in time. Move closer to the router and try again." % e
        return "bad", "Could not connect to <b>%s</b>: %s." % (e, escape(text or code))

    def form_page(err=()):
        msg = ("bad", escape(err[0])) if err else box(False)
        chosen = err[1] if err else None
        rows = []
        for ssid, rssi, secured in creds.listed(ctl.nets):
            e = escape(ssid)
            rows.append(
                '<label class="n"><input type="radio" name="ssid" value="%s"%s><span>%s</span><i class="%s">'
                '</i><b class="g" title="%d dBm"><i style="width:%d%%"></i></b></label>'
                % (
                    e,
                    " checked" if ssid == chosen else "",
                    e,
                    "lk" if secured else "op",
                    rssi,
                    min(100, max(10, (rssi + 95) * 2)),
                )
            )
        more = ""
        if ctl.more:
            more = '<p class="s">%d more network%s nearby: type the name below.</p>' % (
                ctl.more,
                "" if ctl.more == 1 else "s",
            )
        info = ctl.info()
        return page(
            head()
            + ('<div class="m %s">%s</div>' % msg if msg else "")
            + '<form method="post" action="/connect" accept-charset="utf-8"><div class="c">'
            "<h2>Choose your Wi-Fi network</h2>"
            + ("" if ctl.nets else '<p class="s">No networks found.</p>')
            + "".join(rows)
            + more
            + '<a class="s" href="/rescan">Refresh list</a><label class="f">Not in the list? Network name'
            '<input class="t" name="other" maxlength="32" autocapitalize="none" autocorrect="off" '
            'spellcheck="false"></label></div><div class="c"><label class="f">Wi-Fi password<input '
            'class="t" type="password" name="password" maxlength="64" autocapitalize="none" '
            'autocorrect="off" autocomplete="off"></label><span class="s">Leave empty for an open '
            'network.</span><label class="f">Device name <span class="s">(optional)</span><input class="t" '
            'name="name" maxlength="32" value="'
            + (escape(err[2]) if err and err[2] else "")
            + '"></label><button type="submit">Connect</button></div></form>'
            + '<p class="s" style="text-align:center">%s &middot; %s &middot; firmware %s</p></main></body></html>'
            % (escape(ident.name), escape(str(info["device_type"])), escape(str(info["version"]))),
            400 if err else 200,
        )

    @app.get("/")
    async def index(request):
        return form_page()

    @app.get("/result")
    async def result(request):
        testing = ctl.testing is not None
        if not testing and ctl.result is None:
            return "", 303, {"Location": "/"}
        msg = box(True)
        tail = ""
        if testing:
            tail = '<a href="/result">Check again</a>'
        elif not (ctl.result and ctl.result[1] == wifi.JOINED):
            tail = '<a href="/">Back to the form</a>'
        return page(
            head(testing)
            + ('<div class="m %s">%s</div>' % msg if msg else "")
            + tail
            + "</main></body></html>"
        )

    @app.get("/rescan")
    async def rescan(request):
        await ctl.rescan()
        return "", 303, {"Location": "/"}

    @app.post("/connect")
    async def connect(request):
        form = request.form
        if form is None:
            return error(request, 415, "expected a form")
        ssid = form.get("other") or form.get("ssid", "")
        name = form.get("name", "").strip() or None
        password = form.get("password", "")
        bad = creds.check(ssid, password, name)
        if bad is None and ctl.testing is None:
            try:
                ctl.start(ssid, password, name)
            except ValueError as e:
                bad = str(e)
        if bad is not None:
            return form_page((bad, ssid, name))
        return "", 303, {"Location": "/result"}

    @app.get("/api/info")
    async def info(request):
        return json.dumps(ctl.info()), 200, {"Content-Type": JSON}

    @app.get("/api/status")
    async def status(request):
        return json.dumps(ctl.status()), 200, {"Content-Type": JSON}

    @app.get("/api/networks")
    async def networks(request):
        if request.args.get("refresh") == "1":
            await ctl.rescan()
        nets = [{"ssid": s, "rssi": r, "secured": sec} for s, r, sec in creds.listed(ctl.nets)]
        return json.dumps({"networks": nets, "more": ctl.more}), 200, {"Content-Type": JSON}

    @app.post("/api/wifi")
    async def api_wifi(request):
        try:
            d = request.json
        except ValueError:
            return error(request, 400, "invalid JSON")
        if d is None:
            return error(request, 415, "expected application/json")
        if not isinstance(d, dict):
            return error(request, 400, "expected a JSON object")
        ssid = d.get("ssid")
        password = d.get("password", "")
        name = d.get("name")
        if (
            not isinstance(ssid, str)
            or not isinstance(password, str)
            or not isinstance(name, (str, type(None)))
        ):
            return error(request, 400, "ssid, password and name must be strings")
        name = (name.strip() or None) if name else None
        bad = creds.check(ssid, password, name)
        if bad is not None:
            return error(request, 400, bad)
        if ctl.testing is not None:
            return error(request, 409, "already testing a network")
        try:
            ctl.start(ssid, password, name)
        except ValueError as e:
            return error(request, 400, str(e))
        return json.dumps({"accepted": True, "status": "/api/status"}), 202, {"Content-Type": JSON}

    @app.route("/<path:path>", methods=["GET", "POST"])
    async def other(request, path):
        if request.method == "POST":
            return error(request, 404, "nothing to post here")
        if request.path[:5] == "/api/" or request.path == "/favicon.ico":
            return error(request, 404, "not found")
        return to_form()

    @app.errorhandler(413)
    async def too_large(request):
        return error(request, 413, "body too large")

    @app.errorhandler(MemoryError)
    async def busy(request, exc):
        if request.path[:5] == "/api/":
            return '{"error": "busy, try again"}', 503, {"Content-Type": JSON}
        return page('<meta http-equiv="refresh" content="2"><p>Busy, one moment&hellip;</p>', 503)

    return app
