# Normal running of the online phase: the booted_fw and heartbeat measurements, their uploads, the
# periodic firmware check (Online.firmware) and rejoining when Wi-Fi drops. Loaded by Online.run only
# after activation, confirmation and the first check, so that this code and theirs never share the heap.
from micropython import const

from twomes import VERSION, wifi
from twomes.errors import Error
from twomes.log import log

_UPLOAD_BATCH = const(20)
_NET = const(0)  # errors.Error status: no (readable) answer


def measure(on, prop, value):
    """Queue a measurement of the Online `on`; stamped with unix time once the server told it."""
    q = on.app.queue  # survives the phase: measurements wait for the next connection
    if len(q) >= on.cfg.queue_max:
        q.pop(0)  # bounded: the oldest goes first
        log("upload", "queue full: oldest measurement dropped")
    t = on.board.ticks_ms()
    q.append((prop, t, on.at(t), value))


async def upload(on):
    """POST the queued measurements (variable-interval), at most _UPLOAD_BATCH at a time."""
    q = on.app.queue
    while q:
        batch = q[:_UPLOAD_BATCH]
        groups = {}
        for prop, ticks, ts, value in batch:
            if ts is None:
                ts = on.at(ticks)
                if ts is None:
                    raise Error(_NET, "clock not set yet")
            groups.setdefault(prop, []).append({"timestamp": ts, "value": value})
        payload = {
            "upload_time": on.at(on.board.ticks_ms()),
            "property_measurements": [{"property_name": p, "measurements": groups[p]} for p in groups],
        }
        groups = None
        await on.authed("POST", "/device/measurements/variable-interval", payload)
        del q[: len(batch)]
        log("upload", "%d measurement(s) sent" % len(batch))


async def run(on, creds):
    """Until Wi-Fi is lost for good (three rejoins failed): then the caller opens the portal."""
    app, board, cfg = on.app, on.board, on.cfg
    app.set_state("running", "firmware %s" % VERSION)
    measure(on, "booted_fw", VERSION)
    hb_ms = cfg.heartbeat_s * 1000
    fw_ms = cfg.fw_check_s * 1000
    last_hb = last_fw = board.ticks_ms()
    measure(on, "heartbeat", "1")
    back = app.backoff()
    next_upload = 0
    while True:
        now = board.ticks_ms()
        if not board.sta.isconnected():
            # Wi-Fi lost: rejoin with backoff; after 3 failures open the portal (which keeps retrying)
            app.set_state("offline", "Wi-Fi lost")
            rejoin = app.backoff()
            for _ in range(3):
                if await app.join(creds) == wifi.JOINED:
                    break
                await app.sleep_s(rejoin.next_s())
            else:
                app.set_state("offline", "Wi-Fi gone")
                return
            app.set_state("running", "firmware %s" % VERSION)
        if board.ticks_diff(now, last_hb) >= hb_ms:
            last_hb = now
            measure(on, "heartbeat", "1")
        if app.queue and board.ticks_diff(now, next_upload) >= 0:
            try:
                await upload(on)
                back.reset()
            except Error as e:
                delay = back.next_s()
                log("upload", "failed (%s); %d kept, retry in %d s" % (e, len(app.queue), delay))
                next_upload = board.ticks_add(board.ticks_ms(), int(delay * 1000))
        if board.ticks_diff(now, last_fw) >= fw_ms:
            last_fw = now
            await on.firmware(False)
            app.set_state("running", "firmware %s" % VERSION)
        await app.sleep_s(0.5)
