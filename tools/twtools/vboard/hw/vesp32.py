# Simulated `esp32`: NVS with ESP-IDF semantics. `esp32.Partition` (flash partitions and the
# bootloader's OTA rule) lives in vflash and is loaded on first use. On the virtual board this runs in
# the hardware process (vhwd.py), outside the app's heap, as C modules do on the chip; the lazy load
# keeps the in-process fakes of the host tests small.
import errno

import vstate

_NVS_FILE = "nvs.json"
_KEY_MAX = 15
_BLOB_MAX = 4000
_pending = {}  # namespace -> {key: (type, value) or None for erased}, shared by all handles
_committed = None  # the file's content, read once per boot (the real NVS reads flash, not the heap)


def _store():
    global _committed
    if _committed is None:
        _committed = vstate.read_json(_NVS_FILE, {}) or {}
    return _committed


def _check_key(key):
    if not isinstance(key, str) or not 0 < len(key) <= _KEY_MAX:
        raise OSError(errno.EINVAL, "invalid argument")


class NVS:
    """esp32.NVS: typed i32/blob values; nothing is durable before commit()."""

    def __init__(self, namespace):
        _check_key(namespace)
        self._ns = namespace
        if namespace not in _pending:
            _pending[namespace] = {}

    def _get(self, key, kind):
        _check_key(key)
        pend = _pending[self._ns]
        if key in pend:
            item = pend[key]
        else:
            item = _store().get(self._ns, {}).get(key)
        if item is None or item[0] != kind:
            raise OSError(errno.ENOENT, "ESP_ERR_NVS_NOT_FOUND")
        return item[1]

    def set_i32(self, key, value):
        _check_key(key)
        if not isinstance(value, int) or not -(2**31) <= value < 2**31:
            raise OverflowError("value out of range")
        _pending[self._ns][key] = ("i32", value)

    def get_i32(self, key):
        return self._get(key, "i32")

    def set_blob(self, key, value):
        _check_key(key)
        value = bytes(value)
        if len(value) > _BLOB_MAX:
            raise OSError(errno.EINVAL, "invalid argument")
        _pending[self._ns][key] = ("blob", value.hex())

    def get_blob(self, key, buf):
        data = bytes.fromhex(self._get(key, "blob"))
        if len(data) > len(buf):
            raise OSError(errno.EINVAL, "invalid argument")  # ESP_ERR_NVS_INVALID_LENGTH
        buf[: len(data)] = data
        return len(data)

    def erase_key(self, key):
        self._get(key, "i32") if self._kind(key) == "i32" else self._get(key, "blob")
        _pending[self._ns][key] = None

    def _kind(self, key):
        pend = _pending[self._ns]
        item = pend[key] if key in pend else _store().get(self._ns, {}).get(key)
        if item is None:
            raise OSError(errno.ENOENT, "ESP_ERR_NVS_NOT_FOUND")
        return item[0]

    def commit(self):
        pend = _pending[self._ns]
        if not pend:
            return
        data = _store()
        ns = data.get(self._ns, {})
        data[self._ns] = ns
        for key in pend:
            if vstate.cut:  # each key is one atomic NVS write: a power cut may fall between keys
                vstate.cut("nvs " + key, lambda: vstate.write_json(_NVS_FILE, data))
            if pend[key] is None:
                ns.pop(key, None)
            else:
                ns[key] = list(pend[key])
        vstate.write_json(_NVS_FILE, data)
        _pending[self._ns] = {}


def nvs_drop_uncommitted():
    """What a power cut does to NVS writes that were never committed (used by the host tests)."""
    global _committed
    for ns in _pending:
        _pending[ns] = {}
    _committed = None


images = False  # set by vboot when the board has image support (vimage): set_boot checks images


def __getattr__(name):
    if name == "Partition":
        import os
        import sys

        hw = os.getenv("VBOARD_HW")
        if hw and hw not in sys.path:
            sys.path.append(hw)
        import vflash

        if images and vflash.image_check is None:
            vflash.image_check = vflash.vimage_check
        return vflash.Partition
    raise AttributeError(name)
