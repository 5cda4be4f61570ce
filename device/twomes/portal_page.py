# The setup pages (plain HTML + inline CSS, no JavaScript, nothing external), written in small constant
# pieces straight to the connection. Imported only while a page is being written: twomes.portal drops
# it again after the request, so its constants do not stay in the heap.
import asyncio

from twomes import wifi
from twomes.portal import INVALID, header
from twomes.portal_req import escape, networks

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
_MID = b"</title>"


def _bars(rssi):
    return 4 if rssi >= -55 else 3 if rssi >= -67 else 2 if rssi >= -77 else 1


def _result_box(p, w):
    ssid, code, text = p.result
    e = escape(ssid)
    if code == wifi.JOINED:
        w.write(
            (
                '<div class="msg ok"><b>Connected to %s.</b> The device keeps this network and closes its setup '
                "network in a few seconds. You can reconnect your phone to your usual Wi-Fi.</div>" % e
            ).encode()
        )
        return
    if code == wifi.WRONG_PASSWORD:
        why = "The password for <b>%s</b> was not accepted. Check it and try again." % e
    elif code == wifi.NOT_FOUND:
        why = "The network <b>%s</b> was not found. Is the router on and within reach?" % e
    elif code == wifi.TIMEOUT:
        why = "<b>%s</b> did not answer in time. Move closer to the router and try again." % e
    elif code == INVALID:
        why = "<b>%s</b>: %s." % (e, escape(text))
    else:
        why = "Could not connect to <b>%s</b> (%s). Try again." % (e, escape(text))
    w.write(('<div class="msg bad">%s</div>' % why).encode())


async def page(p, w, head, result_view, error=None, chosen=None, name=None):
    """The form (or, with result_view, the testing/result page) of portal `p` on stream `w`."""
    header(w, 400 if error else 200, "text/html; charset=utf-8")
    if head:
        return
    testing = result_view and p.job is not None
    w.write(_HEAD1)
    if testing:
        w.write(b'<meta http-equiv="refresh" content="3;url=/result">')
    w.write(b"<title>Wi-Fi setup")
    w.write(_MID)
    w.write(_CSS)
    w.write(_HEAD2)
    w.write(
        (
            '<h1>Wi-Fi setup</h1><p class="sub">Connect <b>%s</b> to the Internet</p>' % escape(p.ident.name)
        ).encode()
    )
    if error:
        w.write(('<div class="msg bad">%s</div>' % escape(error)).encode())
    elif testing:
        w.write(
            (
                '<div class="msg wait"><b>Testing %s&hellip;</b><br>This takes up to half a minute. Your phone '
                "may lose the connection to <b>%s</b> meanwhile: if so, reconnect to it and this page shows the "
                'result.</div><p><a href="/result">Check again</a></p>'
                % (escape(p.job_ssid), escape(p.ident.name))
            ).encode()
        )
    elif p.job is not None:
        w.write(
            (
                '<div class="msg wait">Testing <b>%s</b>&hellip; <a href="/result">see the result</a></div>'
                % escape(p.job_ssid)
            ).encode()
        )
    elif p.result is not None:
        _result_box(p, w)
        if result_view and p.result[1] != wifi.JOINED:
            w.write(b'<p><a href="/">Try again</a></p>')
    await asyncio.wait_for(w.drain(), 10)
    if not result_view:
        w.write(_FORM1)
        nets = networks(p)
        if not nets:
            w.write(b'<p class="none">No networks found.</p>')
        for ssid, rssi, secured in nets:
            e = escape(ssid)
            w.write(
                (
                    '<label class="net"><input type="radio" name="ssid" value="%s"%s><span>%s</span>'
                    % (e, " checked" if ssid == chosen else "", e)
                ).encode()
            )
            w.write(_LOCK if secured else _OPEN)
            w.write(
                (
                    '<b class="b s%d" title="%d dBm"><i></i><i></i><i></i><i></i></b></label>'
                    % (_bars(rssi), rssi)
                ).encode()
            )
        nets = None
        w.write(_FORM2)
        if name:
            w.write(escape(name).encode())
        w.write(_FORM3)
    info = p.ctl.info()
    w.write(
        (
            '<p class="foot">%s &middot; %s &middot; firmware %s</p>'
            % (
                escape(p.ident.name),
                escape(str(info.get("device_type", ""))),
                escape(str(info.get("version", ""))),
            )
        ).encode()
    )
    w.write(_TAIL)
