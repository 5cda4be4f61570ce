# The online phase of the app: the session token, the server API (docs/api.md) with the time of day
# from the server's Date header, the confirmation and the firmware check; normal running with uploads
# is twomes/running.py, loaded after them. What runs only now and then is loaded for that moment and
# unloaded after it: activation (twomes/activate.py), the confirmation of a new version
# (twomes/update/confirm.py) and the firmware check (twomes/update/check.py). Loaded when Wi-Fi is up and
# unloaded when the portal opens, so the two phases never hold their code in RAM at the same time.
# Session tokens go only into the Authorization header, never into logs.
import json

from micropython import const

from twomes import http, store
from twomes.errors import Error
from twomes.log import log

_NO_FW_API = const(-2)  # errors.Error status: the server has no firmware API (a plain Twomes server)
_MONTHS = "JanFebMarAprMayJunJulAugSepOctNovDec"  # one string: twelve would be twelve qstrs for good


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


class Online:
    """The online phase, and the server interface twomes/update/* use (target, open_release, confirm,
    report)."""

    def __init__(self, app):
        app.buffers()
        self.app = app
        self.board, self.cfg, self.st = app.board, app.cfg, app.st
        self.session = app.st.get(store.SESSION)  # None until activated
        self._time = None  # (unix seconds, ticks) from the server's last Date header: no NTP needed
        self._fw_api = True  # False: a plain Twomes server, no firmware endpoints (asked once)

    async def run(self, creds):
        """Connected: activate, confirm, check firmware, run. Returns when Wi-Fi is lost for good."""
        await self.activate()
        await self.firmware(True)
        # loaded only now: activation, confirmation and the first check are over, their code has gone
        from twomes import running

        await running.run(self, creds)

    # ---- the server API ----------------------------------------------------------------------------
    def sync(self, date_header):
        t = parse_http_date(date_header)
        if t is not None and t > 1600000000:
            self._time = (t, self.board.ticks_ms())

    def at(self, ticks):
        """Unix seconds of a tick value, or None before the server told the time."""
        if self._time is None:
            return None
        return self._time[0] + self.board.ticks_diff(ticks, self._time[1]) // 1000

    async def call(self, method, path, payload=None, auth=True):
        """One API request -> its JSON answer. Error: the HTTP status when it is not 2xx, 0 when
        there is no (readable) answer, _NO_FW_API when a plain Twomes server lacks the endpoint."""
        extra = "Accept: application/json\r\n"
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            extra += "Content-Type: application/json\r\n"
        if auth:
            extra += "Authorization: Bearer %s\r\n" % self.session
        resp = await http.request(
            method,
            self.cfg.server_url.rstrip("/") + path,
            extra,
            body,
            self.cfg.http_timeout_s,
            None,
            self.app.head_buf,
        )
        extra = body = None  # an upload's payload need not stay while the answer is read
        try:
            if "date" in resp.headers:
                self.sync(resp.headers["date"])
            if (
                resp.status == 404
                and path.startswith("/device/firmware")
                and "x-twomes-firmware-api" not in resp.headers
            ):
                raise Error(_NO_FW_API, "no firmware API")
            if resp.status // 100 != 2:
                await http.fail(resp)
            return await resp.json(2048)
        finally:
            await resp.close()

    async def authed(self, method, path, payload=None):
        """call() with the session; on 401 the session was revoked: re-activate once and retry."""
        try:
            return await self.call(method, path, payload)
        except Error as e:
            if e.status != 401:
                raise
        log("activate", "session token refused (401): activating again")
        self.st.delete(store.SESSION)
        self.st.commit()
        await self.activate()
        return await self.call(method, path, payload)

    async def activate(self):
        """A session token: the stored one, or a new one from the server (twomes/activate.py)."""
        if self.app.activated():
            self.session = self.st.get(store.SESSION)
            return
        from twomes import activate

        try:
            await activate.run(self)
        finally:
            activate = None
            self.app.unload("activate")

    # ---- the update interface (docs/device-architecture.md, "The server seam") --------------------
    # A thin adapter until twomes/online/server.py holds every server call: what twomes/update/* use.
    async def target(self):
        """The server's target release (validated by twomes/update/check.py), or None."""
        data = await self.authed("GET", "/device/firmware/target")
        return data.get("release") if isinstance(data, dict) else None

    async def open_release(self, rel, offset=0):
        """GET the release's file from `offset`; returns (response, offset actually served)."""
        extra = "Authorization: Bearer %s\r\n" % self.session
        if offset:  # If-Range: another file (ETag) is sent whole (200)
            extra += 'Range: bytes=%d-\r\nIf-Range: "%s"\r\n' % (offset, rel["sha256"])
        resp = await http.request(
            "GET",
            self.cfg.server_url.rstrip("/") + rel["url"],
            extra,
            None,
            self.cfg.http_timeout_s,
            None,
            self.app.head_buf,
        )
        if resp.status == 206 and offset:
            if not resp.headers.get("content-range", "").startswith("bytes %d-" % offset):
                await resp.close()
                raise Error(0, "server sent another range")
            return resp, offset
        if resp.status == 200:
            return resp, 0  # the server ignores Range: start over
        try:
            await http.fail(resp)
        finally:
            await resp.close()

    async def confirm(self, version):
        await self.authed("POST", "/device/firmware/confirm", {"version": version})

    async def report(self, rel, ok, details):
        """Update feedback: the Twomes firmware API has none (the confirmation is its success report);
        the outcome is on the console only."""
        log("firmware", "update to %s: %s (%s)" % (rel["version"], "installed" if ok else "failed", details))

    # ---- firmware ------------------------------------------------------------------------------------
    async def firmware(self, confirm):
        """After a connection (confirm=True) confirm what runs, when that is due; then check the
        target (twomes/update/confirm.py, twomes/update/check.py; each is loaded only for it). An update
        found is installed by the next boot (twomes/update/job.py): restart."""
        if confirm:
            await self.confirm_running()
        if not self._fw_api:
            return
        # loaded before the request: code loaded after one lands in the holes its garbage left
        from twomes.update import check

        try:
            outcome = await check.run(self.app, self)
        finally:
            check = None
            self.app.unload("update.check", "update.state", "update")
        if outcome == "no_api":
            self._fw_api = False
        elif outcome == "update":
            self.app.set_state("rebooting", "to install an update")
            raise self.app.Restart()

    async def confirm_running(self):
        """A version that has not been confirmed yet (fresh flash or first boot after an update) tells
        the server what it runs; only after the server has it is the version kept
        (twomes/update/confirm.py, which also counts an update that did not stick)."""
        from twomes.update import confirm

        try:
            outcome = await confirm.run(self.app, self)
        finally:
            confirm = None
            self.app.unload("update.confirm", "update.state", "update")
        if outcome == "no_api":
            self._fw_api = False
        elif outcome == "restart":
            raise self.app.Restart()
