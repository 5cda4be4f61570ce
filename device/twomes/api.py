# The server API as the device uses it: the Twomes device endpoints and this project's firmware
# endpoints (docs/api.md). Session tokens go only into the Authorization header, never into logs.
import json

from twomes import http
from twomes.errors import HttpError, NetError, NoFirmwareApi

_FW_HEADER = "x-twomes-firmware-api"


class Api:
    def __init__(self, base_url, timeout_s, clock, open_connection=None, head_buf=None):
        self.base = base_url.rstrip("/")
        self.head = head_buf
        self.timeout = timeout_s
        self.clock = clock
        self.session = None
        self._open = open_connection

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
                self.clock.sync(resp.headers["date"])
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
            "upload_time": self.clock.now(),
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

    async def open_image(self, release, offset=0):
        """Start downloading a release at `offset`; returns (response, offset actually served)."""
        headers = {"Authorization": "Bearer " + self.session}
        if offset:
            headers["Range"] = "bytes=%d-" % offset
        resp = await http.request(
            "GET", self.base + release["url"], headers, None, self.timeout, self._open, self.head
        )
        if resp.status == 206 and offset:
            cr = resp.headers.get("content-range", "")
            if not cr.startswith("bytes %d-" % offset):
                await resp.close()
                raise NetError("server sent another range")
            return resp, offset
        if resp.status == 200:
            return resp, 0  # server ignores Range: start over
        try:
            await http.fail(resp)
        finally:
            await resp.close()


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
