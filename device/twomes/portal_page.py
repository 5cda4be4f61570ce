# The body of the setup form: plain HTML, no JavaScript, nothing external, written in constant pieces
# straight to the connection (no page is ever built in memory). Its head with the inline CSS comes
# first (twomes.portal_head), the box about a credential test from twomes.portal_res; each of them is
# dropped again before the next comes in. Every text that came from outside (SSIDs from the air,
# names typed in a form) is HTML-escaped. Imported only while the form is written: twomes.portal
# drops the module again after the request.

from twomes.portal import escape


async def page(p, w, error, msg):
    """The body of the form of portal `p` on stream `w`, after the status line and the head. `error`:
    () or the (reason, ssid, name) of a refused form, shown again with the reason; `msg`: None or the
    (css class, HTML) of the box about the running or last credential test."""
    dev = escape(p.ident.name)
    w.write(('<h1>Wi-Fi setup</h1><p class="s">Connect <b>%s</b> to the Internet</p>' % dev).encode())
    if error:
        msg = "bad", escape(error[0])
    if msg:
        w.write(('<div class="m %s">%s</div>' % msg).encode())
    msg = None
    await w.drain()  # (bounded by the portal's reap())
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
