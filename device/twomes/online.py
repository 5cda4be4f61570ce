# The online phase of the app: activation, confirmation of a new version, firmware check and update,
# and normal running with uploads. Loaded when Wi-Fi is up and unloaded when the portal opens, so the
# two phases never hold their code in RAM at the same time.
import gc

from micropython import const

from twomes import VERSION, store, wifi
from twomes.errors import BadImage, Error, HttpError, NetError, NoFirmwareApi
from twomes.log import log

_CONFIRM_TRIES = const(6)
_FW_FAILS_MAX = const(3)
_UPLOAD_BATCH = const(20)
RUNNING = "running"


class Online:
    def __init__(self, app):
        from twomes.api import Api
        from twomes.clock import Clock

        self.app = app
        self.board, self.cfg, self.st, self.ident = app.board, app.cfg, app.st, app.ident
        self.set_state, self.sleep_s, self.backoff = app.set_state, app.sleep_s, app.backoff
        self.join, self.activated = app.join, app.activated
        self.clock = Clock(app.board)
        self.api = Api(self.cfg.server_url, self.cfg.http_timeout_s, self.clock, head_buf=app.head_buf)
        self._hinted = None
        self._fw_api = True
        self._queue = app.queue  # survives the phase: measurements wait for the next connection
        self._buf = app.buf

    async def run(self, creds):
        """Connected: activate, confirm, check firmware, run. Returns when Wi-Fi is lost for good."""
        await self.activate()
        await self.confirm()
        await self.check_firmware()
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

    async def confirm(self):
        """A version that has not been confirmed yet (fresh flash or first boot after an update) tells the
        server what it runs; only after the server has it is the version kept."""
        if self.st.get(store.FW_CONFIRMED) == VERSION:
            return
        self.set_state("confirming", VERSION)
        back = self.backoff()
        for _ in range(_CONFIRM_TRIES):
            try:
                await self.authed(self.api.confirm, VERSION)
                break
            except NoFirmwareApi:
                log("firmware", "server has no firmware API: keeping %s without confirmation" % VERSION)
                self._fw_api = False
                break
            except Error as e:
                log("firmware", "confirm failed: %s" % e)
            await self.sleep_s(back.next_s())
        else:
            # never confirmed: reboot; the boot selector rolls back after confirm_boots boots
            log("firmware", "could not confirm %s: restarting" % VERSION)
            raise self.app.Restart()
        import otaboot

        if otaboot.mark_valid():
            log("firmware", "version %s confirmed and kept" % VERSION)
        otaboot = None
        import sys

        sys.modules.pop("otaboot", None)
        if self.st.get(store.IMG_NEW) is not None:
            self.mark_image_valid()
            self.st.delete(store.IMG_NEW)
        self.st.put(store.FW_CONFIRMED, VERSION)
        self.st.delete(store.FW_FAILED)
        self.st.delete(store.FW_FAILS)
        self.st.commit()
        log("firmware", "running %s, confirmed to the server" % VERSION)

    def mark_image_valid(self):
        try:
            self.board.esp32.Partition.mark_app_valid_cancel_rollback()
        except OSError as e:
            if e.args and e.args[0] == -261:
                return  # bootloader without rollback: nothing to cancel (docs: README, OTA)
            log("firmware", "could not mark the app image valid: %s" % e)

    async def check_firmware(self):
        if not self._fw_api:
            return
        self.set_state("checking")
        try:
            rel = await self.authed(self.api.target)
        except NoFirmwareApi:
            log("firmware", "server has no firmware API: updates skipped")
            self._fw_api = False
            return
        except Error as e:
            log("firmware", "check failed: %s" % e)
            return
        if rel is None:
            log("firmware", "no target version set on the server; running %s" % VERSION)
            return
        if rel["version"] == VERSION:
            log("firmware", "up to date (%s)" % VERSION)
            return
        failed = self.st.get(store.FW_FAILED)
        fails = self.st.get_int(store.FW_FAILS, 0) if failed == rel["version"] else 0
        if fails >= _FW_FAILS_MAX:
            log(
                "firmware",
                "target %s failed %d times: not trying it again until the target changes"
                % (rel["version"], fails),
            )
            return
        log("firmware", "target %s, running %s: updating" % (rel["version"], VERSION))
        self.set_state("updating", rel["version"])
        try:
            await self.update(rel)
        except (Error, OSError, MemoryError, ValueError) as e:  # any failure counts; the device runs on
            log("firmware", "update to %s failed: %s" % (rel["version"], e))
            self.st.put(store.FW_FAILED, rel["version"])
            self.st.put_int(store.FW_FAILS, fails + 1)
            self.st.commit()
            return
        self.set_state("rebooting", rel["version"])
        raise self.app.Restart()

    async def update(self, rel):
        gc.collect()
        if rel["kind"] != "bundle":
            try:
                from twomes import ota_image
            except ImportError:
                raise BadImage("this build cannot install ESP32 app images")
            await ota_image.install(self, rel)
            return
        from twomes import ota

        resp, _ = await self.authed(self.api.open_image, rel, 0)
        try:
            await ota.install_bundle(resp, rel, self._buf, VERSION, self.cfg.confirm_boots, log)
        finally:
            await resp.close()
            self.app.unload("ota")

    # ---- running ---------------------------------------------------------------------------------
    def measure(self, prop, value):
        if len(self._queue) >= self.cfg.queue_max:
            self._queue.pop(0)  # bounded: the oldest goes first
            log("upload", "queue full: oldest measurement dropped")
        self._queue.append((prop, self.board.ticks_ms(), self.clock.now(), value))

    async def upload(self):
        while self._queue:
            batch = self._queue[:_UPLOAD_BATCH]
            items = []
            for prop, ticks, ts, value in batch:
                items.append((prop, ts if ts is not None else self.clock.at(ticks), value))
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
                    next_upload = self.board.ticks_ms() + int(delay * 1000)
            if self.board.ticks_diff(now, last_fw) >= fw_ms:
                last_fw = now
                await self.check_firmware()
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
