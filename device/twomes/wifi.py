# Station join with a clear reason. (What the setup accepts and offers, the credential rule and the
# scan list, is in twomes/creds.py: only the portal phase needs it.)
import asyncio

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
        await asyncio.sleep(0.1)  # a literal: one float for good, not a new one at each poll
    try:
        sta.disconnect()  # stop the driver's own endless retries
    except OSError:
        pass
    return result
