# The setup pages: plain HTML + inline CSS, no JavaScript, nothing external, written in constant pieces
# straight to the connection (no page is ever built in memory). Every text that came from outside
# (SSIDs from the air, names typed in a form) is HTML-escaped. Imported only while a page is written:
# twomes.portal drops the module again after the request.
#
# Heap: everything here is in the heap while a page is written (during a credential test too, when
# the phone polls /result), so it is one function for the page plus escape(), and the static text in
# few constants (each constant costs an object header and rounding besides its bytes).
import asyncio

from twomes import wifi
from twomes.portal import HTML, INVALID, send


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


async def page(p, w, req, error):
    """The form (on /result: the testing/result page) of portal `p` on stream `w`. `error`: () or the
    (reason, ssid, name) of a refused form, which is shown again with the reason (400)."""
    send(w, 400 if error else 200, HTML, None)
    if req.method == "HEAD":
        return
    result_view = req.path == "/result"
    testing = result_view and p.job is not None
    w.write(
        b'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Wi-Fi setup</title>'
        b'<meta name="viewport" content="width=device-width,initial-scale=1">'
    )
    if testing:
        w.write(b'<meta http-equiv="refresh" content="3;url=/result">')
    w.write(
        b"<style>body{margin:0;font:16px/1.4 system-ui,sans-serif;background:#eef1f5;color:#18212d}"
        b"main{max-width:30em;margin:auto;padding:1em}h1{font-size:1.4em;margin:.3em 0 0}h2{font-size:1.1em}"
        b".s{color:#5a6676;font-size:.9em}a{color:#0b63c4}"
        b".c{background:#fff;border-radius:14px;padding:.2em 1em 1em;margin:1em 0;box-shadow:0 1px 3px #0002}"
        b".n{display:flex;align-items:center;gap:.7em;padding:.7em 0;border-bottom:1px solid #e5e9ef}"
        b".n span{flex:1;overflow-wrap:anywhere}.n input{width:1.2em;height:1.2em;margin:0}"
        b".f{display:block;font-weight:600;margin-top:.8em}"
    )
    w.write(
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
    dev = escape(p.ident.name)
    w.write(('<h1>Wi-Fi setup</h1><p class="s">Connect <b>%s</b> to the Internet</p>' % dev).encode())
    # the box above the form: (css class, HTML) or None
    msg = None
    if error:
        msg = "bad", escape(error[0])
    elif p.job is not None:
        msg = (
            "w",
            "<b>Testing %s&hellip;</b> %s"
            % (
                escape(p.job_ssid),
                "This takes up to half a minute. Your phone may drop off the device's network meanwhile: "
                "reconnect to it and this page shows the result."
                if testing
                else '<a href="/result">See the result</a>',
            ),
        )
    elif p.result is not None:
        ssid, code, text = p.result
        e = escape(ssid)
        if code == wifi.JOINED:
            msg = (
                "ok",
                (
                    "<b>Connected to %s.</b> The device keeps this network and closes its setup network in a few "
                    "seconds. Reconnect your phone to your usual Wi-Fi." % e
                ),
            )
        elif code == wifi.WRONG_PASSWORD:
            msg = "bad", "The password for <b>%s</b> was not accepted. Check it and try again." % e
        elif code == wifi.NOT_FOUND:
            msg = "bad", "The network <b>%s</b> was not found. Is the router on and within reach?" % e
        elif code == wifi.TIMEOUT:
            msg = "bad", "<b>%s</b> did not answer in time. Move closer to the router and try again." % e
        else:
            why = text if code == INVALID else wifi.REASONS.get(code, text)
            msg = "bad", "Could not connect to <b>%s</b>: %s." % (e, escape(why))
    if msg:
        w.write(('<div class="m %s">%s</div>' % msg).encode())
    msg = None
    if result_view:
        if testing:
            w.write(b'<a href="/result">Check again</a>')
        elif not (p.result and p.result[1] == wifi.JOINED):
            w.write(b'<a href="/">Back to the form</a>')
    else:
        await asyncio.wait_for(w.drain(), 10)
        chosen = error[1] if error else None
        w.write(
            b'<form method="post" action="/connect" accept-charset="utf-8"><div class="c">'
            b"<h2>Choose your Wi-Fi network</h2>"
        )
        nets = p.networks()
        if not nets:
            w.write(b'<p class="s">No networks found.</p>')
        for ssid, rssi, secured in nets:
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
        nets = None
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
    info = p.ctl.info()
    w.write(
        (
            '<p class="s" style="text-align:center">%s &middot; %s &middot; firmware %s</p></main></body></html>'
            % (dev, escape(str(info.get("device_type", ""))), escape(str(info.get("version", ""))))
        ).encode()
    )
