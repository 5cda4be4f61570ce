# Station join with a clear reason, and a scan list a person can read.
import asyncio

from micropython import const

JOINED = "joined"
WRONG_PASSWORD = "wrong_password"
NOT_FOUND = "not_found"
TIMEOUT = "timeout"
FAILED = "failed"
REASONS = {
    JOINED: "connected",
    WRONG_PASSWORD: "wrong password",
    NOT_FOUND: "no such network",
    TIMEOUT: "no answer from the network (timeout)",
    FAILED: "connection failed",
}
_POLL_MS = const(100)
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


async def join(board, ssid, password, timeout_ms):
    """Connect the station; returns one of JOINED, WRONG_PASSWORD, NOT_FOUND, TIMEOUT, FAILED."""
    net = board.network
    sta = board.sta
    sta.active(True)
    try:
        sta.disconnect()
    except OSError:
        pass
    sta.connect(ssid, password)
    t0 = board.ticks_ms()
    while True:
        st = sta.status()
        if st == net.STAT_GOT_IP:
            return JOINED
        # some IDF versions report a wrong password as a handshake timeout
        if st in (net.STAT_WRONG_PASSWORD, getattr(net, "STAT_HANDSHAKE_TIMEOUT", -1)):
            result = WRONG_PASSWORD
            break
        if st == net.STAT_NO_AP_FOUND:
            result = NOT_FOUND
            break
        if st == getattr(net, "STAT_ASSOC_FAIL", -1):
            result = FAILED
            break
        if board.ticks_diff(board.ticks_ms(), t0) >= timeout_ms:
            result = TIMEOUT
            break
        await asyncio.sleep(_POLL_MS / 1000)
    try:
        sta.disconnect()  # stop the driver's own endless retries
    except OSError:
        pass
    return result


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
