# The server API as the device uses it: the Twomes device endpoints and this project's firmware
# endpoints (docs/api.md), and the time of day (from the server's Date header). Session tokens go only
# into the Authorization header, never into logs.
import json

from twomes import http
from twomes.errors import HttpError, NetError, NoFirmwareApi

_FW_HEADER = "x-twomes-firmware-api"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def days_from_civil(y, m, d):
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_http_date(text):
    """'Tue, 25 Nov 2026 10:00:00 GMT' -> unix seconds, or None when it is not an IMF-fixdate."""
    try:
        parts = text.split()
        day, mon, year = int(parts[1]), _MONTHS.index(parts[2]) + 1, int(parts[3])
        hh, mm, ss = [int(x) for x in parts[4].split(":")]
        if parts[5] != "GMT" or not (1 <= day <= 31 and 0 <= hh < 24 and 0 <= mm < 60 and 0 <= ss < 61):
            return None
    except (ValueError, IndexError):
        return None
    return days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss


class Api:
    def __init__(self, board, base_url, timeout_s, open_connection=None, head_buf=None):
        self.board = board
        self.base = base_url.rstrip("/")
        self.head = head_buf
        self.timeout = timeout_s
        self.session = None
        self._open = open_connection
        self._time = None  # (unix seconds, ticks) from the server's last Date header: no NTP needed

    def sync(self, date_header):
        t = parse_http_date(date_header) if date_header else None
        if t is not None and t > 1600000000:
            self._time = (t, self.board.ticks_ms())

    def at(self, ticks):
        """Unix seconds of a tick value, or None before the server told the time."""
        if self._time is None:
            return None
        return self._time[0] + self.board.ticks_diff(ticks, self._time[1]) // 1000

    def now(self):
        return self.at(self.board.ticks_ms())

    async def _call(self, method, path, payload=None, auth=True, limit=2048):
        headers = {"Accept": "application/json"}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = "Bearer " + self.session
        resp = await http.request(
            method, self.base + path, headers, body, self.timeout, self._open, self.head
        )
        try:
            if "date" in resp.headers:
                self.sync(resp.headers["date"])
            if resp.status == 404 and path.startswith("/device/firmware") and _FW_HEADER not in resp.headers:
                raise NoFirmwareApi()
            if resp.status // 100 != 2:
                await http.fail(resp)
            return await resp.json(limit)
        finally:
            await resp.close()

    async def activate(self, activation_token):
        """POST /device/activate -> the new session token (also kept in self.session)."""
        data = await self._call(
            "POST", "/device/activate", {"activation_token": activation_token}, auth=False
        )
        token = data.get("session_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not 8 <= len(token) <= 1024:
            raise NetError("activation answer has no session token")
        self.session = token
        return token

    async def upload(self, items):
        """items: [(property, unix seconds, value string)] -> POST variable-interval measurements."""
        groups = {}
        for prop, ts, value in items:
            groups.setdefault(prop, []).append({"timestamp": ts, "value": value})
        payload = {
            "upload_time": self.now(),
            "property_measurements": [{"property_name": p, "measurements": groups[p]} for p in groups],
        }
        return await self._call("POST", "/device/measurements/variable-interval", payload)

    async def target(self):
        """The target release dict, or None when the server sets none. NoFirmwareApi on a plain server."""
        data = await self._call("GET", "/device/firmware/target")
        rel = data.get("release") if isinstance(data, dict) else None
        if rel is None:
            return None
        return check_release(rel)

    async def confirm(self, version):
        return await self._call("POST", "/device/firmware/confirm", {"version": version})


def check_release(rel):
    """Validate a release object from the server (it is input like any other)."""
    try:
        ok = (
            isinstance(rel["version"], str)
            and 0 < len(rel["version"]) <= 64
            and rel["kind"] in ("bundle", "image")
            and isinstance(rel["size"], int)
            and rel["size"] > 0
            and isinstance(rel["sha256"], str)
            and len(rel["sha256"]) == 64
            and isinstance(rel["url"], str)
            and rel["url"].startswith("/")
        )
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise HttpError(200, "malformed release")
    return rel
