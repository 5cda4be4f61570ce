# The online phase of the app: activation, confirmation of a new version, firmware check and update,
# and normal running with uploads. Loaded when Wi-Fi is up and unloaded when the portal opens, so the
# two phases never hold their code in RAM at the same time.

from micropython import const

from twomes import VERSION, store, wifi
from twomes.errors import Error, HttpError, NetError
from twomes.log import log

_UPLOAD_BATCH = const(20)
RUNNING = "running"


class Online:
    def __init__(self, app):
        from twomes.api import Api

        app.buffers()
        self.app = app
        self.board, self.cfg, self.st, self.ident = app.board, app.cfg, app.st, app.ident
        self.set_state, self.sleep_s, self.backoff = app.set_state, app.sleep_s, app.backoff
        self.join, self.activated = app.join, app.activated
        self.api = Api(app.board, self.cfg.server_url, self.cfg.http_timeout_s, head_buf=app.head_buf)
        self._hinted = None
        self._fw_api = True
        self._queue = app.queue  # survives the phase: measurements wait for the next connection
        self._buf = app.buf

    async def run(self, creds):
        """Connected: activate, confirm, check firmware, run. Returns when Wi-Fi is lost for good."""
        await self.activate()
        await self.firmware(True)
        await self.running(creds)

    async def activate(self):
        if self.activated():
            self.api.session = self.st.get(store.SESSION)
            return
        self.set_state("activating")
        back = self.backoff()
        while True:
            try:
                token = await self.api.activate(self.ident.activation_token)
                self.st.put(store.SESSION, token)
                self.st.commit()
                self._hinted = None
                log("activate", "activated; session token stored")
                return
            except HttpError as e:
                if e.status == 404:
                    self.hint(
                        "not registered on the server yet: the operator registers the activation "
                        "line printed at boot"
                    )
                elif e.status == 403:
                    self.hint("registered, but not attached to an owner yet: waiting for the owner")
                else:
                    log("activate", "server answered %d %s" % (e.status, e.detail))
            except NetError as e:
                log("activate", "no answer: %s" % e)
            await self.sleep_s(back.next_s())

    async def firmware(self, confirm):
        """Confirm what runs (after a connection), then check the target; the code is loaded for this.
        An update found is installed by the next boot (twomes/update.py): restart."""
        from twomes import fw

        try:
            if confirm:
                await fw.confirm(self)
            due = await fw.check(self)
        finally:
            fw = None
            self.app.unload("fw")
        if due:
            self.set_state("rebooting", "to install an update")
            raise self.app.Restart()

    def hint(self, text):
        if self._hinted != text:  # one clear line per condition, not one per retry
            self._hinted = text
            log("activate", text)

    async def authed(self, coro_fn, *args):
        """Call the API; on 401 the session was revoked: re-activate once and retry."""
        try:
            return await coro_fn(*args)
        except HttpError as e:
            if e.status != 401:
                raise
        log("activate", "session token refused (401): activating again")
        self.st.delete(store.SESSION)
        self.st.commit()
        await self.activate()
        return await coro_fn(*args)

    def measure(self, prop, value):
        if len(self._queue) >= self.cfg.queue_max:
            self._queue.pop(0)  # bounded: the oldest goes first
            log("upload", "queue full: oldest measurement dropped")
        self._queue.append((prop, self.board.ticks_ms(), self.api.now(), value))

    async def upload(self):
        while self._queue:
            batch = self._queue[:_UPLOAD_BATCH]
            items = []
            for prop, ticks, ts, value in batch:
                items.append((prop, ts if ts is not None else self.api.at(ticks), value))
            if any(ts is None for _p, ts, _v in items):
                raise NetError("clock not set yet")
            await self.authed(self.api.upload, items)
            del self._queue[: len(batch)]
            log("upload", "%d measurement(s) sent" % len(batch))

    async def running(self, creds):
        self.set_state(RUNNING, "firmware %s" % VERSION)
        self.measure("booted_fw", VERSION)
        hb_ms = self.cfg.heartbeat_s * 1000
        fw_ms = self.cfg.fw_check_s * 1000
        last_hb = last_fw = self.board.ticks_ms()
        self.measure("heartbeat", "1")
        back = self.backoff()
        next_upload = 0
        while True:
            now = self.board.ticks_ms()
            if not self.board.sta.isconnected():
                if not await self.reconnect(creds):
                    return
                self.set_state(RUNNING, "firmware %s" % VERSION)
            if self.board.ticks_diff(now, last_hb) >= hb_ms:
                last_hb = now
                self.measure("heartbeat", "1")
            if self._queue and self.board.ticks_diff(now, next_upload) >= 0:
                try:
                    await self.upload()
                    back.reset()
                except Error as e:
                    delay = back.next_s()
                    log("upload", "failed (%s); %d kept, retry in %d s" % (e, len(self._queue), delay))
                    next_upload = self.board.ticks_add(self.board.ticks_ms(), int(delay * 1000))
            if self.board.ticks_diff(now, last_fw) >= fw_ms:
                last_fw = now
                await self.firmware(False)
                self.set_state(RUNNING, "firmware %s" % VERSION)
            await self.sleep_s(0.5)

    async def reconnect(self, creds):
        """Wi-Fi lost: rejoin with backoff; after 3 failures open the portal (which keeps retrying)."""
        self.set_state("offline", "Wi-Fi lost")
        back = self.backoff()
        for _ in range(3):
            if await self.join(creds) == wifi.JOINED:
                return True
            await self.sleep_s(back.next_s())
        self.set_state("offline", "Wi-Fi gone")
        return False
