# Normal running: the booted_fw and heartbeat measurements, their uploads, the periodic firmware check
# and rejoining when Wi-Fi drops.
#
# Uploads follow the server's device type: after activation (and whenever a 400 names unknown
# properties) GET /device tells the type's property names, and only those are sent. A batch refused
# with 400 "Invalid property name(s): {...}" is sent again without the named properties; a 400 that
# names none drops that batch with one console line. Nothing else in the queue is lost, and a refused
# batch never blocks the ones behind it.
import json

from micropython import const

from twomes import VERSION, wifi
from twomes.errors import Error
from twomes.log import log, printable

_UPLOAD_BATCH = const(20)
_PROPS_MAX = const(64)
_NET = const(0)
_RUNNING = const("running")  # the state (a private constant: its name is not interned, docs/heap.md)


def measure(app, srv, prop, value):
    """Queue a measurement; stamped with unix time once the server told it."""
    q = app.queue  # survives the phase: measurements wait for the next connection
    if len(q) >= app.cfg.queue_max:
        q.pop(0)  # bounded: the oldest goes first
        log("upload", "queue full: oldest measurement dropped")
    t = app.board.ticks_ms()
    q.append((prop, t, srv.at(t), value))


async def learn(srv):
    """The device type's property names from GET /device (srv.props); None when the server does not
    say (then everything is sent and a 400 teaches us)."""
    try:
        data = await srv.device()
    except Error as e:
        log("upload", "device type's properties unknown (%s): sending all" % e)
        return
    props = data.get("properties")
    if props is None and isinstance(data.get("device_type"), dict):
        props = data["device_type"].get("properties")
    if not isinstance(props, list):
        log("upload", "the server lists no properties for this device: sending all")
        return
    names = []
    for p in props[:_PROPS_MAX]:
        name = p.get("name") if isinstance(p, dict) else p
        if isinstance(name, str):
            names.append(name)
    srv.props = names
    log("upload", "device type has %d properties" % len(names))


def unknown_names(detail):
    """The property names in a Twomes 400 "Invalid property name(s): {'a', 'b'}", or []. Read as
    bytes: indexing a str interns every character it hands out (docs/heap.md)."""
    text = detail.encode()
    i = text.find(b"{")
    j = text.rfind(b"}")
    if b"property" not in text or i < 0 or j < i:
        return []
    out = []
    for part in text[i + 1 : j].split(b","):
        part = part.strip()
        if len(part) >= 2 and part[:1] == part[-1:] and part[:1] in (b"'", b'"'):
            out.append(str(part[1:-1], "utf-8"))
    return out


def _drop_props(app, srv, names):
    """Forget measurements of properties the server does not know; they are not sent again."""
    q = app.queue
    before = len(q)
    q[:] = [m for m in q if m[0] not in names]
    for n in names:
        if n not in srv.unknown and len(srv.unknown) < _PROPS_MAX:
            srv.unknown.append(n)
            log("upload", "the server's device type has no property %s: not sent" % printable(n, 32))
    return before - len(q)


async def upload(app, srv):
    """POST the queued measurements (variable-interval), at most _UPLOAD_BATCH at a time."""
    q = app.queue
    unknown = []
    for m in q:
        if m[0] in srv.unknown or srv.props is not None and m[0] not in srv.props:
            if m[0] not in unknown:
                unknown.append(m[0])
    if unknown:
        _drop_props(app, srv, unknown)
    while q:
        batch = q[:_UPLOAD_BATCH]
        groups = {}
        for prop, ticks, ts, value in batch:
            if ts is None:
                ts = srv.at(ticks)
                if ts is None:
                    raise Error(_NET, "clock not set yet")
            groups.setdefault(prop, []).append({"timestamp": ts, "value": value})
        payload = {
            "upload_time": srv.at(app.board.ticks_ms()),
            "property_measurements": [{"property_name": p, "measurements": groups[p]} for p in groups],
        }
        groups = None
        # sent as its JSON text: the request's peak holds the bytes, not the objects they were made
        # of (measured on the unix port: 20 measurements 1.9 KB of objects, 1.0 KB of text; 2: 0.5, 0.3)
        payload = json.dumps(payload).encode()
        try:
            await srv.upload(payload)
        except Error as e:
            if e.status != 400:
                raise
            names = unknown_names(str(e))
            if names and _drop_props(app, srv, names):
                continue  # the rest goes again without them
            log(
                "upload",
                "server refused %d measurement(s) (%s): dropped" % (len(batch), printable(str(e), 100)),
            )
        payload = None
        del q[: len(batch)]
        log("upload", "%d measurement(s) sent" % len(batch))
        if app.state != _RUNNING:  # e.g. after a re-activation: uploads work again
            app.set_state(_RUNNING, "firmware %s" % VERSION)


async def run(app, srv, creds, check, confirm, updates=None):
    """Until Wi-Fi is lost for good (three rejoins failed): then "offline". `check(app, updates,
    False)` is the periodic firmware check (the online phase's) with the update seam `updates` (srv
    when None, or a DDI server whose polling interval, sleep_s, replaces fw_check_s): True when it
    saved an update -> "update". While the server has not taken this version's confirmation (it
    answers, but not with success), `confirm(app, updates)` is asked again with backoff: the device
    keeps running and uploading."""
    upd = updates or srv
    board, cfg = app.board, app.cfg
    await learn(srv)
    app.set_state(_RUNNING, "firmware %s" % VERSION)
    measure(app, srv, "booted_fw", VERSION)
    hb_ms = cfg.heartbeat_s * 1000
    fw_ms = (getattr(upd, "sleep_s", None) or cfg.fw_check_s) * 1000
    last_hb = last_fw = board.ticks_ms()
    measure(app, srv, "heartbeat", "1")
    back = app.backoff()
    again = app.backoff()  # the confirmation's retries
    next_upload = 0
    next_confirm = board.ticks_add(board.ticks_ms(), int(again.next_s() * 1000))
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
                return "offline"
            app.set_state(_RUNNING, "firmware %s" % VERSION)
        if board.ticks_diff(now, last_hb) >= hb_ms:
            last_hb = now
            measure(app, srv, "heartbeat", "1")
        if app.queue and board.ticks_diff(now, next_upload) >= 0:
            try:
                await upload(app, srv)
                back.reset()
            except Error as e:
                delay = back.next_s()
                log("upload", "failed (%s); %d kept, retry in %d s" % (e, len(app.queue), delay))
                next_upload = board.ticks_add(board.ticks_ms(), int(delay * 1000))
                if e.status == 401:
                    app.set_state("activating", "session refused")
        if upd.unconfirmed and board.ticks_diff(now, next_confirm) >= 0:
            upd.unconfirmed = await confirm(app, upd) == "pending"
            next_confirm = board.ticks_add(board.ticks_ms(), int(again.next_s() * 1000))
            app.set_state(_RUNNING, "firmware %s" % VERSION)
        if board.ticks_diff(now, last_fw) >= fw_ms:
            last_fw = now
            if await check(app, upd, False):
                return "update"
            fw_ms = (getattr(upd, "sleep_s", None) or cfg.fw_check_s) * 1000
            app.set_state(_RUNNING, "firmware %s" % VERSION)
        await app.sleep_s(0.5)
