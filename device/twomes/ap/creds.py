# Wi-Fi credentials in AP mode: the rule the ESP32 Wi-Fi driver applies (the portal, the app API,
# Improv and the host's `twomes provision` all check with it), the scan list a person picks a network
# from (deduplicated, strongest first, capped), and how text a client sent is shown on the console.
# Storing working credentials is twomes.wifi's (save/saved/forget).
from micropython import const

_SSID_MAX = const(32)
_PASS_MAX = const(64)
_NAME_MAX = const(32)
SHOWN_MAX = const(16)  # networks offered in the form, the app API and Improv; the rest: "type the name"


def utf8_ok(b):
    """Whether bytes `b` are valid UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF).
    MicroPython's decode() is lenient; text that reaches a page, a JSON answer or NVS is checked here."""
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            k, lo, hi = 1, 0x80, 0xBF
        elif 0xE0 <= c <= 0xEF:
            k = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
        elif 0xF0 <= c <= 0xF4:
            k = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
        else:
            return False
        if i + k >= n:  # truncated sequence
            return False
        if not lo <= b[i + 1] <= hi:
            return False
        for j in range(i + 2, i + k + 1):
            if not 0x80 <= b[j] <= 0xBF:
                return False
        i += k + 1
    return True


def text_ok(s):
    """Whether str `s` is valid Unicode text (CPython: no lone surrogates; MicroPython: valid UTF-8)."""
    try:
        return utf8_ok(s.encode())
    except UnicodeError:
        return False


def check(ssid, password, name=None):
    """None when acceptable, else a short reason (as the ESP32 Wi-Fi driver would refuse them)."""
    if not ssid or not text_ok(ssid) or len(ssid.encode()) > _SSID_MAX:
        return "the network name must be 1 to 32 bytes of UTF-8 text"
    if not text_ok(password):
        return "the password must be UTF-8 text"
    n = len(password.encode())
    if n > _PASS_MAX or 0 < n < 8 or n == _PASS_MAX and not _is_hex(password):
        return "the password must be empty (open network), 8 to 63 characters, or 64 hex digits"
    if name is not None and (not text_ok(name) or len(name.encode()) > _NAME_MAX):
        return "the device name must be at most 32 bytes of UTF-8 text"
    return None


# Text from outside is looked at as its UTF-8 bytes, never character by character: MicroPython interns
# every character a str hands out (iteration, s[i]) as a qstr, for good, so a client sending new
# characters would grow the heap with each request (docs/heap.md).


def _is_hex(text):
    for c in text.encode("utf-8", "surrogatepass"):
        if not (48 <= c <= 57 or 65 <= c <= 70 or 97 <= c <= 102):  # 0-9 A-F a-f
            return False
    return True


def shown(s):
    """`s` (text a client or the air sent) as it may go on the console: printable ASCII as it is, a
    backslash and anything else as a \\x/\\u escape (its code point). No forged log line, no terminal
    escape sequence."""
    b = s.encode("utf-8", "surrogatepass")  # (CPython: a lone surrogate is escaped too)
    out = bytearray()
    n = len(b)
    i = 0
    while i < n:
        o = b[i]
        i += 1
        k = 0  # continuation bytes of this character (a stray one is shown as the byte it is)
        if o >= 0xF0:
            k, o = 3, o & 0x07
        elif o >= 0xE0:
            k, o = 2, o & 0x0F
        elif o >= 0xC0:
            k, o = 1, o & 0x1F
        while k and i < n:
            o = o << 6 | b[i] & 0x3F
            i += 1
            k -= 1
        if 0x20 <= o < 0x7F and o != 0x5C:
            out.append(o)
        elif o < 0x100:
            out.extend(b"\\x%02x" % o)
        else:
            out.extend(b"\\u%04x" % o)
    return out.decode()


def scan(board):
    """(nets, more): nets = the networks shown, strongest first, one entry per name, at most SHOWN_MAX,
    packed in one bytes object (listed() reads them: held for the whole of setup mode, a list of
    tuples and strings took ~130 bytes of heap a network on the 64-bit unix port, this ~35); more = how
    many other names were seen. Hidden networks and names that are not UTF-8 text are left out.
    Blocking on the chip (~2 s): before the AP starts or from a refresh request."""
    board.sta.active(True)
    found = board.sta.scan()
    # strongest first, then the first of each name is its best: no dict of every name in the air
    found.sort(key=lambda r: -r[3])
    nets = bytearray()
    names = []
    more = 0
    for ssid, _bssid, _ch, rssi, auth, hidden in found:
        if hidden or not ssid or not utf8_ok(ssid) or ssid in names:
            continue
        names.append(ssid)
        if len(names) <= SHOWN_MAX:  # length, name, RSSI (a byte, two's complement), secured
            nets.append(len(ssid))
            nets.extend(ssid)
            nets.append(rssi & 0xFF)
            nets.append(1 if auth != 0 else 0)
        else:
            more += 1
    return bytes(nets), more


def listed(nets):
    """(ssid, rssi, secured) of each network of a scan() list, in its order."""
    i = 0
    n = len(nets)
    while i < n:
        k = nets[i]
        r = nets[i + k + 1]
        yield nets[i + 1 : i + 1 + k].decode(), r - 256 if r > 127 else r, nets[i + k + 2] != 0
        i += k + 3
