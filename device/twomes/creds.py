# Wi-Fi credentials in AP mode: the rule the ESP32 Wi-Fi driver applies (the portal, Improv and the
# host's `twomes provision` all check with it) and the scan list a person picks a network from. Loaded
# by the portal phase only; joining (twomes/wifi.py) is all the online phase needs.
from micropython import const

_SSID_MAX = const(32)
_PASS_MAX = const(64)


def check_credentials(ssid, password):
    """None when acceptable, else a short reason (as the ESP32 Wi-Fi driver would refuse them)."""
    if not ssid or len(ssid.encode()) > _SSID_MAX:
        return "the network name must be 1 to 32 bytes"
    n = len(password.encode())
    if n > _PASS_MAX or 0 < n < 8 or n == _PASS_MAX and not _is_hex(password):
        return "the password must be empty (open network), 8 to 63 characters, or 64 hex digits"
    return None


def _is_hex(text):
    for ch in text:
        if ch not in "0123456789abcdefABCDEF":
            return False
    return True


def scan(board):
    """[(ssid, rssi, secured)] strongest first, one entry per name, hidden networks left out.
    Blocking on the chip (~2 s): call it before the AP starts or from a refresh request."""
    board.sta.active(True)
    best = {}
    for ssid, _bssid, _ch, rssi, auth, hidden in board.sta.scan():
        if hidden or not ssid:
            continue
        try:
            name = ssid.decode()
        except UnicodeError:
            continue
        if name not in best or rssi > best[name][1]:
            best[name] = (name, rssi, auth != 0)
    out = list(best.values())
    out.sort(key=lambda n: -n[1])
    return out
