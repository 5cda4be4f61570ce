# Station join with a clear reason, and the owner of the stored Wi-Fi credentials. (What the setup
# accepts and offers, the credential rule and the scan list, belongs to the AP-mode code.)
#
# NVS "wifi": JSON ["<ssid>", "<password>"] - ONE item, so a power cut never leaves the new network's
# name with the old network's password. Firmware <= 1.0 kept two items (wifi_ssid, wifi_pass): read
# once as a fallback and removed by the next save() or forget().
import asyncio
import json

from twomes import store

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


async def join(board, ssid, password, timeout_ms, sleep=None):
    """Connect the station; returns one of JOINED, WRONG_PASSWORD, NOT_FOUND, TIMEOUT, FAILED (after
    timeout_ms on the board's ticks). `sleep(seconds)` between looks: asyncio.sleep unless given."""
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
        await (sleep or asyncio.sleep)(0.1)  # a literal: one float for good, not a new one at each poll
    try:
        sta.disconnect()  # stop the driver's own endless retries
    except OSError:
        pass
    return result


def saved(st):
    """(ssid, password) stored, or None."""
    raw = st.get(store.WIFI)
    if raw is not None:
        try:
            ssid, password = json.loads(raw)
            if isinstance(ssid, str) and isinstance(password, str) and ssid:
                return ssid, password
        except (ValueError, TypeError):
            pass
        return None  # damaged: as if none were stored (setup asks again)
    ssid, password = st.get(store.OLD_SSID), st.get(store.OLD_PASS)
    return (ssid, password) if ssid and password is not None else None


def save(st, ssid, password):
    """Store working credentials as one unit (durable when this returns)."""
    st.put(store.WIFI, json.dumps([ssid, password]))
    st.delete(store.OLD_SSID)
    st.delete(store.OLD_PASS)
    st.commit()


def forget(st):
    """Forget the network (the button's long press): durable when this returns."""
    st.delete(store.WIFI)
    st.delete(store.OLD_SSID)
    st.delete(store.OLD_PASS)
    st.commit()
