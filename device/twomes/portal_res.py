# The result of a credential test as the setup pages show it: the box above the form (box()) and the
# result page /result (page()), which a phone reloads every 3 s while the test runs. That page is
# small on purpose (no form, no network list, and its own copy of the short part of the form's style:
# loading twomes.portal_head for it too made the page miss the heap during tests at 64K): it is what
# the phone asks for during the test and right after it, the portal's lowest moments in the heap.
# Imported per request and dropped again by twomes.portal.
from twomes import wifi
from twomes.portal import INVALID, escape


def box(p, testing):
    """(css class, HTML) of the box about the running or last credential test of portal `p`, or None.
    `testing`: shown on the result page (which reloads itself) rather than above the form."""
    if p.job is not None:
        return (
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
    if p.result is None:
        return None
    ssid, code, text = p.result
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
    why = text if code == INVALID else wifi.REASONS.get(code, text)
    return "bad", "Could not connect to <b>%s</b>: %s." % (e, escape(why))


def page(p, w):
    """The whole result page of portal `p` on stream `w` (after the status line)."""
    testing = p.job is not None
    w.write(
        b'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Wi-Fi setup</title>'
        b'<meta name="viewport" content="width=device-width,initial-scale=1">'
    )
    if testing:
        w.write(b'<meta http-equiv="refresh" content="3;url=/result">')
    w.write(
        b"<style>body{margin:0;font:16px/1.4 system-ui,sans-serif;background:#eef1f5;color:#18212d}"
        b"main{max-width:30em;margin:auto;padding:1em}h1{font-size:1.4em;margin:.3em 0 0}"
        b".s{color:#5a6676;font-size:.9em}a{color:#0b63c4}.m{border-radius:10px;padding:.8em 1em;margin:1em 0}"
        b".ok{background:#dff5e6}.bad{background:#fde5e5}.w{background:#e3eefc}</style></head><body><main>"
    )
    dev = escape(p.ident.name)
    w.write(('<h1>Wi-Fi setup</h1><p class="s">Connect <b>%s</b> to the Internet</p>' % dev).encode())
    msg = box(p, True)
    if msg:
        w.write(('<div class="m %s">%s</div>' % msg).encode())
    if testing:
        w.write(b'<a href="/result">Check again</a>')
    elif not (p.result and p.result[1] == wifi.JOINED):
        w.write(b'<a href="/">Back to the form</a>')
    w.write(b"</main></body></html>")
