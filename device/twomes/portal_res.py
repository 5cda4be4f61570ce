# The result of a credential test as the setup pages show it: the box above the form (box()) and the
# body of the result page /result (page()), which a phone reloads every 3 s while the test runs. That
# page is small on purpose (the short part of the style, no form, no network list): it is what the
# phone asks for during the test and right after it, the portal's lowest moments in the heap.
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
    """The body of the result page of portal `p` on stream `w` (after its head)."""
    msg = box(p, True)
    if msg:
        w.write(('<div class="m %s">%s</div>' % msg).encode())
    if p.job is not None:
        w.write(b'<a href="/result">Check again</a>')
    elif not (p.result and p.result[1] == wifi.JOINED):
        w.write(b'<a href="/">Back to the form</a>')
    w.write(b"</main></body></html>")
