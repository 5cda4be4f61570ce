# Typed access to one NVS namespace. A missing key reads as None; every value is one atomic NVS item,
# and nothing is durable before commit(). All keys of the app are listed here (NVS keys: <= 15 chars).
import errno

from micropython import const

_BUF = const(256)
_ESP_ERR_NVS_NOT_FOUND = const(-4354)  # what some esp32 builds raise instead of ENOENT

ACT_TOKEN = "act_token"  # activation token (digits), made once, survives Wi-Fi resets
AP_SECRET = "ap_secret"  # seed of the AP password
SESSION = "session"  # device session token from /device/activate
WIFI = "wifi"  # Wi-Fi credentials as one item (format: twomes/wifi.py, their one owner)
OLD_SSID = "wifi_ssid"  # firmware <= 1.0: read and removed by twomes/wifi.py
OLD_PASS = "wifi_pass"
# the update state: read and written only by twomes/update/state.py, which documents the formats
FW_CONFIRMED = "fw_ok"  # version last confirmed to the server
FW_FAIL = "fw_fail"  # failed attempts in a row and the version they belong to, one item
FW_FAILED = "fw_bad"  # firmware <= 1.0: the version, then FW_FAILS the count (read once, removed)
FW_FAILS = "fw_fails"
DL_STATE = "dl_state"  # a resumable image download
IMG_NEW = "img_new"  # an ESP32 app image was installed and switched to
FW_COUNTER = "fw_ctr"  # highest security counter of a release kept (anti-rollback)
FW_COUNTER_NEW = "fw_ctr_new"  # the security counter of the release just installed, until it is kept
RESET = "reset"  # a factory reset under way (set first, removed last): the next boot finishes it
ALL_KEYS = (
    ACT_TOKEN,
    AP_SECRET,
    SESSION,
    WIFI,
    OLD_SSID,
    OLD_PASS,
    FW_CONFIRMED,
    FW_FAIL,
    FW_FAILED,
    FW_FAILS,
    DL_STATE,
    IMG_NEW,
    FW_COUNTER,
    FW_COUNTER_NEW,
    RESET,
)


def _missing(e):
    return e.errno in (errno.ENOENT, _ESP_ERR_NVS_NOT_FOUND) or (
        e.args and e.args[0] == _ESP_ERR_NVS_NOT_FOUND
    )


class Store:
    def __init__(self, nvs):
        self._nvs = nvs
        self._buf = bytearray(_BUF)
        self.commit = nvs.commit  # nothing is durable before commit()
        self.put_int = nvs.set_i32  # put_int(key, value)

    def get(self, key):
        try:
            n = self._nvs.get_blob(key, self._buf)
        except OSError as e:
            if _missing(e):
                return None
            raise
        try:
            return bytes(self._buf[:n]).decode()
        except UnicodeError:
            return None  # damaged value: treat as absent

    def put(self, key, value):
        data = value.encode()
        if len(data) > _BUF:
            raise ValueError("value too long")
        self._nvs.set_blob(key, data)

    def get_int(self, key, default=0):
        try:
            return self._nvs.get_i32(key)
        except OSError as e:
            if _missing(e):
                return default
            raise

    def delete(self, key):
        try:
            self._nvs.erase_key(key)
        except OSError as e:
            if not _missing(e):
                raise

    def erase_all(self):
        """Factory reset, all or nothing across power cuts (NVS is atomic per key, not per commit): the
        RESET marker first, in a commit of its own, then the session in one of its own (a session
        must never outlive the activation token it came from: the device would upload into the
        previous owner's record and never print a new activation line), then every other key, the
        marker last. A cut before the marker changes nothing; after it, the next boot sees the marker
        (start.boot) and erases again."""
        self.put(RESET, "1")
        self.commit()
        self.delete(SESSION)
        self.commit()
        for key in ALL_KEYS:
            if key != RESET:
                self.delete(key)
        self.commit()
        self.delete(RESET)
        self.commit()
