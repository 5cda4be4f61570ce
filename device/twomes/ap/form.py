# The Wi-Fi form's POST (application/x-www-form-urlencoded): decoding (every value must be valid UTF-8)
# and handing the credentials to the controller. A refused form is shown again with the reason.
from micropython import const

from twomes.ap import creds, pages
from twomes.ap.httpd import HttpError, send

_FIELDS_MAX = const(12)
_HEX = b"0123456789abcdefABCDEF"


def unquote(b):
    """application/x-www-form-urlencoded value (bytes) -> str: `+` is a space, %XX a byte, then UTF-8.
    A `%` not followed by two hex digits stays as it is; bytes that are not UTF-8 text raise ValueError."""
    out = bytearray()
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c == 43:  # +
            c = 32
        elif c == 37 and i + 2 < n and b[i + 1] in _HEX and b[i + 2] in _HEX:  # %XX
            c = int(bytes(b[i + 1 : i + 3]), 16)
            i += 2
        out.append(c)
        i += 1
    if not creds.utf8_ok(out):
        raise ValueError("not UTF-8")
    return bytes(out).decode()


def parse_form(data, keys):
    """{key: str} for the wanted `keys` only (first occurrence wins); ValueError on bad encoding."""
    if isinstance(data, str):
        data = data.encode()
    out = {}
    pairs = data.split(b"&")
    if len(pairs) > _FIELDS_MAX:
        raise ValueError("too many fields")
    for pair in pairs:
        k, _, v = pair.partition(b"=")
        k = unquote(k)
        if k in keys and k not in out:
            out[k] = unquote(v)
    return out


async def post(p, req, w):
    """POST /connect: start the credential test and send the phone to /result, or show the form again."""
    if not req.ctype.startswith("application/x-www-form-urlencoded"):
        raise HttpError(415, "expected a form")
    try:
        d = parse_form(req.body, ("ssid", "other", "password", "name"))
    except ValueError:
        raise HttpError(400, "the form could not be decoded") from None
    req.body = None
    ssid = d.get("other") or d.get("ssid", "")
    name = d.get("name", "").strip() or None
    password = d.get("password", "")
    d = None
    ctl = p.ctl
    bad = creds.check(ssid, password, name)
    if bad is None and ctl.testing is None:  # else a test runs already: the phone is sent to its result
        try:
            ctl.start(ssid, password, name)
        except ValueError as e:
            bad = str(e)
    if bad is not None:
        password = None
        await pages.form(p, req, w, (bad, ssid, name))
        return
    password = None
    req.answered = True
    send(w, 303, where="/result")
