# Every call to the server, behind one small interface: the seam where another protocol plugs in
# (twomes/online/ddi.py takes the update calls to an Eclipse hawkBit DDI server). The Twomes device
# API and this project's firmware API are in docs/api.md.
#
# Owner of NVS "session" (the device session token from POST /device/activate; every activation
# replaces it). The token goes only into the Authorization header, never into a log line.
#
# Calls raise errors.Error: .status is the HTTP status of an answer we did not want, 0 when there is no
# (readable) answer, -2 when the server has no firmware API (a plain Twomes server).
import json

from micropython import const

from twomes import store
from twomes.errors import Error
from twomes.log import log, printable
from twomes.online import http

_NET = const(0)
_NO_FW_API = const(-2)
_JSON_MAX = const(2048)  # any answer we parse (GET /device lists the type's properties: 4 KB)
_DEVICE_MAX = const(4096)
_MONTHS = const("JanFebMarAprMayJunJulAugSepOctNovDec")  # one string: twelve would be twelve qstrs for good


def session(st):
    """The stored session token, or None (not activated)."""
    return st.get(store.SESSION)


def parse_http_date(text):
    """'Tue, 25 Nov 2026 10:00:00 GMT' -> unix seconds, or None when it is not an IMF-fixdate."""
    try:
        parts = text.split()
        d, m, y = int(parts[1]), _MONTHS.find(parts[2]), int(parts[3])
        hh, mm, ss = [int(x) for x in parts[4].split(":")]
        if (
            parts[5] != "GMT"
            or len(parts[2]) != 3
            or m % 3
            or not (1 <= d <= 31 and 0 <= hh < 24 and 0 <= mm < 60 and 0 <= ss < 61)
        ):
            return None
    except (ValueError, IndexError):
        return None
    # days since 1970-01-01 of a date of the proleptic Gregorian calendar (H. Hinnant's days_from_civil)
    m = m // 3 + 1
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + hh * 3600 + mm * 60 + ss


def tls(on, url):
    """The TLS context that verifies `url`'s server (None for http). It is on.context[0]: a one-element
    list that the online phase's seams (Server, Ddi) share, so the phase has one context (3 KB of heap
    on the 64-bit unix port), made once from the CA file deployed with the config - by the phase at
    its start, before anything else of the phase is in the heap (twomes/online/phase.py), else here at
    a seam's first https request - and used by every connection of the phase. Each connection wraps
    its socket with it and the server's name, so every one verifies the certificate chain and the name
    again (twomes/hw.py connect). Not one per connection: a running state's request found 7.9K free
    at 64K but no 3K piece for a new one (docs/heap.md). Whoever needs the heap for a while (the
    signature check) empties the list; the next call makes a new context. A CA file that no context
    takes is refused here. Plain http only with allow_http (a lab setting, logged at boot by the
    config)."""
    cfg = on.cfg
    if url.startswith("http://"):
        if not cfg.allow_http:
            raise Error(_NET, "plain http refused (set allow_http for a lab server)")
        return None
    held = on.context
    if held[0] is None:
        try:
            with open(cfg.ca_file, "rb") as f:
                cadata = f.read()
        except OSError:
            raise Error(_NET, "no CA file %s to verify the server" % cfg.ca_file)
        from twomes import hw

        try:
            held[0] = hw.tls_context(cadata)
        except (ValueError, OSError) as e:
            raise Error(_NET, "CA file %s unusable (%s)" % (cfg.ca_file, e))
    return held[0]


def request(on, method, url, extra, body):
    """One request of a server seam `on` (Server, Ddi: cfg, board, head buffer, TLS context) within the
    config's time limits -> an awaitable: the Response (the caller awaits it at once and closes it).
    (A function, not a coroutine, as http.request and the seams' open(): no coroutine frame of their
    own in the heap while a request runs.)"""
    t = on.cfg.http_timeout_s
    return http.request(method, url, extra, body, t, on.head, on.board, tls(on, url), 3 * t)


class Server:
    def __init__(self, app):
        self.app = app
        self.board, self.cfg, self.st = app.board, app.cfg, app.st
        self.head = app.buffers(False)[1]  # (no streaming buffer: twomes.update's installers take it)
        self.session = session(app.st)
        self.fw_api = True  # False: a plain Twomes server, no firmware endpoints (learnt once)
        self.props = None  # the device type's property names (GET /device), None: not known
        self.unknown = []  # property names the server refused (400): never sent again
        self.unconfirmed = False  # this version's confirmation is still to be taken by the server
        self.rel = None  # the release of the last target() that named one
        self._time = None  # (unix seconds, ticks) from the server's last Date header: no NTP needed
        self.context = [None]  # the phase's TLS context, shared with its Ddi (tls())
        self._url = app.cfg.server_url.rstrip("/")

    # ---- time from the server ------------------------------------------------------------------
    def sync(self, date_header):
        t = parse_http_date(date_header)
        if t is not None and t > 1600000000:
            self._time = (t, self.board.ticks_ms())

    def at(self, ticks):
        """Unix seconds of a tick value, or None before the server told the time."""
        if self._time is None:
            return None
        return self._time[0] + self.board.ticks_diff(ticks, self._time[1]) // 1000

    # ---- requests --------------------------------------------------------------------------------
    def open(self, method, url, extra="", body=None):
        """One request to `url` (this server or a release URL on it) -> an awaitable: the Response (the
        caller awaits it at once and closes it)."""
        return request(self, method, url, extra, body)

    async def call(self, method, path, payload=None, auth=True, limit=_JSON_MAX):
        """One API request -> its JSON answer (see the module's note for the errors). `payload`: what
        the request sends as JSON, or its JSON text already encoded (bytes)."""
        extra = "Accept: application/json\r\n"
        body = None
        if payload is not None:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            extra += "Content-Type: application/json\r\n"
        if auth:
            extra += "Authorization: Bearer %s\r\n" % self.session
        resp = await self.open(method, self._url + path, extra, body)
        extra = body = None  # an upload's payload need not stay while the answer is read
        try:
            if "date" in resp.headers:
                self.sync(resp.headers["date"])
            if (
                resp.status == 404
                and path.startswith("/device/firmware")
                and "x-twomes-firmware-api" not in resp.headers
            ):
                self.fw_api = False
                raise Error(_NO_FW_API, "no firmware API")
            if resp.status // 100 != 2:
                await http.fail(resp)
            return await resp.json(limit)
        finally:
            await resp.close()

    async def authed(self, method, path, payload=None, limit=_JSON_MAX):
        """call() with the session. 401: the session was revoked (someone activated with our token):
        one new activation, then the call again. Raises Error(401) when that fails too."""
        try:
            return await self.call(method, path, payload, True, limit)
        except Error as e:
            if e.status != 401:
                raise
        log("activate", "session token refused (401): activating again")
        await self.activate()
        return await self.call(method, path, payload, True, limit)

    # ---- the Twomes device API -------------------------------------------------------------------
    async def activate(self):
        """POST /device/activate with the activation token: the new session token replaces the old
        one in NVS (stored before it is used). Error 404: not registered; 403: no owner yet."""
        data = await self.call(
            "POST", "/device/activate", {"activation_token": self.app.ident.activation_token}, False
        )
        token = data.get("session_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not 8 <= len(token) <= 200 or not _is_token(token):
            raise Error(_NET, "activation answer has no session token")
        self.st.put(store.SESSION, token)
        self.st.commit()
        self.session = token
        log("activate", "activated; session token stored")

    async def device(self):
        """GET /device: this device's record with its type's properties (a dict)."""
        data = await self.authed("GET", "/device", None, _DEVICE_MAX)
        if not isinstance(data, dict):
            raise Error(_NET, "device answer is not an object")
        return data

    async def upload(self, payload):
        """POST /device/measurements/variable-interval. `payload`: the upload's JSON object, or its
        JSON text (bytes: the caller lets go of the objects before the request)."""
        return await self.authed("POST", "/device/measurements/variable-interval", payload)

    # ---- the firmware API (ours) -----------------------------------------------------------------
    async def target(self):
        """The release the server wants this device to run (a dict, validated by twomes.update), or
        None when it names none."""
        data = await self.authed("GET", "/device/firmware/target")
        self.rel = data.get("release") if isinstance(data, dict) else data
        return self.rel

    async def confirm(self, version):
        """Tell the server which version runs (after an update: before it is kept)."""
        await self.authed("POST", "/device/firmware/confirm", {"version": version})

    async def report(self, rel, ok, details):
        """Update feedback: our firmware API learns the outcome from the confirmation (success) and
        from the version the device keeps confirming (failure), so there is no call to make; a failure
        is said on the console. (hawkBit takes feedback: twomes/online/ddi.py.)"""
        if not ok:
            log("firmware", "release %s not installed: %s" % (printable(str(rel.get("version"))), details))

    async def wanted(self, rel):
        """Is the saved release still wanted? Our firmware API has no way to withdraw one (the next
        check decides about a changed target); hawkBit cancels actions (twomes/online/ddi.py)."""
        return True

    async def open_release(self, rel, offset=0):
        """GET the release's file from `offset`: (response, offset actually served). If-Range with the
        release's sha256 (the server's ETag): another file is sent whole (200)."""
        if rel["url"][:1] != "/":  # the session token goes to this server only
            raise Error(-1, "release URL is not on this server")
        extra = "Authorization: Bearer %s\r\n" % self.session
        if offset:
            extra += 'Range: bytes=%d-\r\nIf-Range: "%s"\r\n' % (offset, rel["sha256"])
        resp = await self.open("GET", self._url + rel["url"], extra)
        if resp.status == 206 and offset:
            if not resp.headers.get("content-range", "").startswith("bytes %d-" % offset):
                await resp.close()
                raise Error(_NET, "server sent another range")
            return resp, offset
        if resp.status == 200:
            return resp, 0  # the server ignores Range: start over
        try:
            await http.fail(resp)
        finally:
            await resp.close()


def _is_token(text):
    for c in text.encode():  # (bytes: iterating a str interns every character it hands out)
        if not 33 <= c <= 126:  # printable ASCII, no space: it goes into a header line
            return False
    return True
