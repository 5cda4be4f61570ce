# The setup pages (no JavaScript, nothing external): the Wi-Fi form and the result page a phone reloads
# while a credential test runs. The style is written once, in head(). Everything that came from outside
# (SSIDs from the air, text typed in a form) is HTML-escaped; the network list is streamed row by row.
from twomes import wifi
from twomes.ap import creds
from twomes.ap.httpd import HTML, escape, send

INVALID = "invalid"  # result code of credentials the controller refused (its reason is the text)


def head(w, refresh=False):
    """The page's head with the style, up to <main>. `refresh`: reload /result every 3 s."""
    w.write(
        b'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Wi-Fi setup</title>'
        b'<meta name="viewport" content="width=device-width,initial-scale=1">'
    )
    if refresh:
        w.write(b'<meta http-equiv="refresh" content="3;url=/result">')
    w.write(
        b"<style>body{margin:0;font:16px/1.4 system-ui,sans-serif;background:#eef1f5;color:#18212d}"
        b"main{max-width:30em;margin:auto;padding:1em}h1{font-size:1.4em;margin:.3em 0 0}h2{font-size:1.1em}"
        b".s{color:#5a6676;font-size:.9em}a{color:#0b63c4}"
        b".c{background:#fff;border-radius:14px;padding:.2em 1em 1em;margin:1em 0;box-shadow:0 1px 3px #0002}"
        b".n{display:flex;align-items:center;gap:.7em;padding:.7em 0;border-bottom:1px solid #e5e9ef}"
        b".n span{flex:1;overflow-wrap:anywhere}.n input{width:1.2em;height:1.2em;margin:0}"
        b".f{display:block;font-weight:600;margin-top:.8em}"
        b".t{display:block;width:100%;box-sizing:border-box;font:inherit;padding:.6em;margin:.3em 0;"
        b"border:1px solid #bcc5d1;border-radius:9px}"
        b"button{width:100%;font:inherit;font-weight:600;padding:.8em;margin-top:1em;border:0;"
        b"border-radius:9px;background:#0b63c4;color:#fff}"
        b".g{width:28px;height:6px;background:#cdd4de;border-radius:3px}.g i{display:block;height:6px;"
        b"background:#18212d;border-radius:3px}.lk,.op{width:10px;height:8px}"
        b".lk{background:#5a6676;border-radius:2px;position:relative;margin-top:4px}.lk:before{content:'';"
        b"position:absolute;left:2px;top:-6px;width:3px;height:5px;border:1.5px solid #5a6676;"
        b"border-bottom:0;border-radius:4px 4px 0 0}"
        b".m{border-radius:10px;padding:.8em 1em;margin:1em 0}.ok{background:#dff5e6}.bad{background:#fde5e5}"
        b".w{background:#e3eefc}</style></head><body><main>"
    )


def _title(w, ident):
    w.write(
        (
            '<h1>Wi-Fi setup</h1><p class="s">Connect <b>%s</b> to the Internet</p>' % escape(ident.name)
        ).encode()
    )


def box(ctl, testing):
    """(css class, HTML) of the box about the running or last credential test, or None. `testing`: on
    the result page (which reloads itself) rather than above the form."""
    if ctl.testing is not None:
        return (
            "w",
            "<b>Testing %s&hellip;</b> %s"
            % (
                escape(ctl.testing),
                "This takes up to half a minute. Your phone may drop off the device's network meanwhile: "
                "reconnect to it and this page shows the result."
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
            "<b>Connected to %s.</b> The device keeps this network and closes its setup network in a few "
            "seconds. Reconnect your phone to your usual Wi-Fi." % e,
        )
    if code == wifi.WRONG_PASSWORD:
        return "bad", "The password for <b>%s</b> was not accepted. Check it and try again." % e
    if code == wifi.NOT_FOUND:
        return "bad", "The network <b>%s</b> was not found. Is the router on and within reach?" % e
    if code == wifi.TIMEOUT:
        return "bad", "<b>%s</b> did not answer in time. Move closer to the router and try again." % e
    return "bad", "Could not connect to <b>%s</b>: %s." % (e, escape(text or code))


async def form(p, req, w, error=()):
    """The Wi-Fi form of portal `p`. `error`: () or the (reason, ssid, name) of a refused form, shown
    again with the reason (status 400)."""
    ctl = p.ctl
    msg = ("bad", escape(error[0])) if error else box(ctl, False)
    req.answered = True
    send(w, 400 if error else 200, HTML, None, req.head)
    if req.head:
        return
    head(w)
    _title(w, p.ident)
    if msg:
        w.write(('<div class="m %s">%s</div>' % msg).encode())
    msg = None
    await w.drain()
    chosen = error[1] if error else None
    w.write(
        b'<form method="post" action="/connect" accept-charset="utf-8"><div class="c">'
        b"<h2>Choose your Wi-Fi network</h2>"
    )
    if not ctl.nets:
        w.write(b'<p class="s">No networks found.</p>')
    for ssid, rssi, secured in creds.listed(ctl.nets):
        e = escape(ssid)
        w.write(
            (
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
            ).encode()
        )
        await w.drain()  # row by row: the page is never in the heap whole
    if ctl.more:
        w.write(
            (
                '<p class="s">%d more network%s nearby: type the name below.</p>'
                % (ctl.more, "" if ctl.more == 1 else "s")
            ).encode()
        )
    w.write(
        b'<a class="s" href="/rescan">Refresh list</a><label class="f">Not in the list? Network name'
        b'<input class="t" name="other" maxlength="32" autocapitalize="none" autocorrect="off" spellcheck="false">'
        b'</label></div><div class="c"><label class="f">Wi-Fi password<input class="t" type="password" '
        b'name="password" maxlength="64" autocapitalize="none" autocorrect="off" autocomplete="off"></label>'
        b'<span class="s">Leave empty for an open network.</span><label class="f">Device name '
        b'<span class="s">(optional)</span><input class="t" name="name" maxlength="32" value="'
    )
    if error and error[2]:
        w.write(escape(error[2]).encode())
    w.write(b'"></label><button type="submit">Connect</button></div></form>')
    info = ctl.info()
    w.write(
        (
            '<p class="s" style="text-align:center">%s &middot; %s &middot; firmware %s</p></main></body></html>'
            % (escape(p.ident.name), escape(str(info["device_type"])), escape(str(info["version"])))
        ).encode()
    )


async def rescan(p, req, w):
    """GET /rescan ("Refresh list"): a new scan (the controller limits how often), then the form."""
    await p.ctl.rescan()
    req.answered = True
    send(w, 303, where="/")


async def result(p, req, w):
    """The result page: what a phone reloads during a credential test and right after it (the form
    when there is no test to show)."""
    ctl = p.ctl
    testing = ctl.testing is not None
    req.answered = True
    if not testing and ctl.result is None:
        send(w, 303, where="/")
        return
    send(w, 200, HTML, None, req.head)
    if req.head:
        return
    head(w, testing)
    _title(w, p.ident)
    msg = box(ctl, True)
    if msg:
        w.write(('<div class="m %s">%s</div>' % msg).encode())
    if testing:
        w.write(b'<a href="/result">Check again</a>')
    elif not (ctl.result and ctl.result[1] == wifi.JOINED):
        w.write(b'<a href="/">Back to the form</a>')
    w.write(b"</main></body></html>")
