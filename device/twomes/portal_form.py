# Decoding the portal's Wi-Fi form (application/x-www-form-urlencoded). Loaded by twomes.portal_req
# only for a form POST (the app's JSON does not need it) and dropped with it after the request.
from micropython import const

_FIELDS_MAX = const(12)
_HEX = b"0123456789abcdefABCDEF"


def unquote(b):
    """application/x-www-form-urlencoded value (bytes) -> str: `+` is a space, %XX a byte, then UTF-8.
    A `%` not followed by two hex digits stays as it is; invalid UTF-8 raises ValueError."""
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
