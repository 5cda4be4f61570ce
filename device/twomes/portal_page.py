# The setup pages: plain HTML + inline CSS, no JavaScript, nothing external, written in small constant
# pieces straight to the connection (no page is ever built in memory). Every text that came from outside
# (SSIDs from the air, names typed in a form) is HTML-escaped. Imported only while a page is written:
# twomes.portal drops the module again after the request.
import asyncio

from twomes import wifi
from twomes.portal import HTML, INVALID, send

_CSS = (
    b"<style>body{margin:0;font:16px/1.45 system-ui,sans-serif;background:#eef1f5;color:#18212d}"
    b"main{max-width:30em;margin:auto;padding:1em}h1{font-size:1.4em;margin:.3em 0 0}"
    b"h2{font-size:1.05em;margin:0 0 .3em}.sub,.hint,.none{color:#5a6676;font-size:.9em}"
    b".card{background:#fff;border-radius:14px;padding:1em;margin:0 0 1em;box-shadow:0 1px 3px #0002}"
    b".net{display:flex;align-items:center;gap:.7em;padding:.7em 0;border-bottom:1px solid #e5e9ef}"
    b".net span{flex:1;overflow-wrap:anywhere}.net input{width:1.2em;height:1.2em;margin:0}"
    b"label.f{display:block;font-weight:600;font-size:.9em;margin-top:.7em}"
    b".t{display:block;width:100%;box-sizing:border-box;font:inherit;padding:.65em;margin:.3em 0;"
    b"border:1px solid #bcc5d1;border-radius:9px}"
    b"button{width:100%;font:inherit;font-weight:600;padding:.8em;margin-top:.8em;border:0;"
    b"border-radius:9px;background:#0b63c4;color:#fff}a{color:#0b63c4}"
    b".b{display:inline-flex;align-items:flex-end;gap:2px;height:15px}"
    b".b i{width:4px;background:#cdd4de;border-radius:1px}.b i+i{height:55%}.b i+i+i{height:80%}"
    b".b i:first-child{height:30%}.b i:last-child{height:100%}"
    b".s1 i:first-child,.s2 i:nth-child(-n+2),.s3 i:nth-child(-n+3),.s4 i{background:#18212d}"
    b".lk,.op{width:10px;height:8px;margin:6px 2px 0;border-radius:2px;position:relative}.lk{background:#5a6676}"
    b".lk:before{content:'';position:absolute;left:2px;top:-6px;width:3px;height:5px;"
    b"border:1.5px solid #5a6676;border-bottom:0;border-radius:4px 4px 0 0}"
    b".msg{border-radius:10px;padding:.8em 1em;margin:1em 0}.ok{background:#dff5e6;color:#0f5129}"
    b".bad{background:#fde5e5;color:#7a1c1c}.wait{background:#e3eefc;color:#133e73}"
    b".foot{color:#8793a3;font-size:.8em;text-align:center}</style></head><body><main>"
)
_FORM = (
    b'<form method="post" action="/connect" accept-charset="utf-8">'
    b'<div class="card"><h2>Choose your Wi-Fi network</h2>'
)
_FORM2 = (
    b'<a class="hint" href="/rescan">Refresh list</a><label class="f">Not in the list? Network name'
    b'<input class="t" name="other" maxlength="32" autocapitalize="none" autocorrect="off" spellcheck="false">'
    b'</label></div><div class="card"><label class="f">Wi-Fi password<input class="t" type="password" '
    b'name="password" maxlength="64" autocapitalize="none" autocorrect="off" autocomplete="off"></label>'
    b'<span class="hint">Leave empty for an open network.</span><label class="f">Device name '
    b'<span class="hint">(optional)</span><input class="t" name="name" maxlength="32" value="'
)
_FORM3 = b'"></label><button type="submit">Connect</button></div></form>'


def escape(s):
    """HTML-escape text for element content and quoted attributes."""
    return (
        s.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def _w(w, fmt, *args):
    w.write((fmt % args).encode())


async def page(p, w, head, result_view, error=None, chosen=None, name=None):
    """The form (or, with result_view, the testing/result page) of portal `p` on stream `w`."""
    send(w, 400 if error else 200, HTML, None)
    if head:
        return
    testing = result_view and p.job is not None
    w.write(b'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">')
    w.write(b'<meta name="viewport" content="width=device-width,initial-scale=1"><title>Wi-Fi setup</title>')
    if testing:
        w.write(b'<meta http-equiv="refresh" content="3;url=/result">')
    w.write(_CSS)
    dev = escape(p.ident.name)
    _w(w, '<h1>Wi-Fi setup</h1><p class="sub">Connect <b>%s</b> to the Internet</p>', dev)
    if error:
        _w(w, '<div class="msg bad">%s</div>', escape(error))
    elif p.job is not None:
        _w(w, '<div class="msg wait"><b>Testing %s&hellip;</b>', escape(p.job_ssid))
        if testing:
            _w(w, "<br>This takes up to half a minute. Your phone may drop off <b>%s</b> meanwhile: ", dev)
            w.write(b'reconnect to it and this page shows the result.</div><a href="/result">Check again</a>')
        else:
            w.write(b' <a href="/result">See the result</a></div>')
    elif p.result is not None:
        ssid, code, text = p.result
        e = escape(ssid)
        if code == wifi.JOINED:
            _w(w, '<div class="msg ok"><b>Connected to %s.</b> The device keeps this network and ', e)
            w.write(
                b"closes its setup network in a few seconds. Reconnect your phone to your usual Wi-Fi.</div>"
            )
        else:
            if code == wifi.WRONG_PASSWORD:
                msg = "The password for <b>%s</b> was not accepted. Check it and try again." % e
            elif code == wifi.NOT_FOUND:
                msg = "The network <b>%s</b> was not found. Is the router on and within reach?" % e
            elif code == wifi.TIMEOUT:
                msg = "<b>%s</b> did not answer in time. Move closer to the router and try again." % e
            else:
                why = text if code == INVALID else wifi.REASONS.get(code, text)
                msg = "Could not connect to <b>%s</b>: %s." % (e, escape(why))
            _w(w, '<div class="msg bad">%s</div>', msg)
            if result_view:
                w.write(b'<a href="/">Try again</a>')
    await asyncio.wait_for(w.drain(), 10)
    if not result_view:
        w.write(_FORM)
        nets = p.networks()
        if not nets:
            w.write(b'<p class="none">No networks found.</p>')
        for ssid, rssi, secured in nets:
            e = escape(ssid)
            _w(
                w,
                '<label class="net"><input type="radio" name="ssid" value="%s"%s><span>%s</span>',
                e,
                " checked" if ssid == chosen else "",
                e,
            )
            _w(
                w,
                '<i class="%s" title="%s"></i>',
                "lk" if secured else "op",
                "secured" if secured else "open",
            )
            bars = 4 if rssi >= -55 else 3 if rssi >= -67 else 2 if rssi >= -77 else 1
            _w(w, '<b class="b s%d" title="%d dBm"><i></i><i></i><i></i><i></i></b></label>', bars, rssi)
        nets = None
        w.write(_FORM2)
        if name:
            w.write(escape(name).encode())
        w.write(_FORM3)
    info = p.ctl.info()
    _w(
        w,
        '<p class="foot">%s &middot; %s &middot; firmware %s</p></main></body></html>',
        dev,
        escape(str(info.get("device_type", ""))),
        escape(str(info.get("version", ""))),
    )
