# One line per event on the serial console: "[  12.345] tag: message".
# Never pass a secret (Wi-Fi password, session token) here; say "stored" instead.
import time

_t0 = None
sink = None  # a list: lines are also appended here (host tests read what the device said)


def log(tag, msg):
    global _t0
    try:
        now = time.ticks_ms()
        if _t0 is None:
            _t0 = now
        t = time.ticks_diff(now, _t0)
    except AttributeError:  # CPython host tests
        now = time.monotonic()  # pyright: ignore[reportAttributeAccessIssue] - CPython only (not in the stubs)
        if _t0 is None:
            _t0 = now
        t = int((now - _t0) * 1000)
    line = "[%4d.%03d] %s: %s" % (t // 1000, t % 1000, tag, msg)
    print(line)
    if sink is not None:
        sink.append(line)


def printable(text, limit=64):
    """Text from outside (a server, a phone) as it may reach the console: control characters shown as
    '?', bounded - so nobody can forge a console line or send escape sequences to the terminal. Looked
    at as UTF-8 bytes: iterating a str would intern every character it holds, for good (docs/heap.md)."""
    b = text[:limit].encode("utf-8", "surrogatepass")
    out = bytearray()
    n = len(b)
    i = 0
    while i < n:
        c = b[i]
        i += 1
        if c < 0x20 or c == 0x7F:  # C0 controls, DEL
            c = 63
        elif c == 0xC2 and i < n and b[i] < 0xA0:  # C1 controls (U+0080..U+009F): two bytes
            c = 63
            i += 1
        out.append(c)
    return out.decode("utf-8", "surrogatepass") + ("..." if len(text) > limit else "")
