# Simulated ESP32 flash partitions backed by files, and the second-stage bootloader's OTA selection
# and rollback rule (otadata kept in otadata.json). Reached as esp32.Partition (see vesp32).
import errno

import vstate

ESP_ERR_NOT_FOUND = -261  # what mark_app_valid_cancel_rollback() raises without bootloader rollback
_BLOCK = 4096
_PIECE = 256
_ERASED = b"\xff" * _PIECE
_EMPTY_SEQ = 0xFFFFFFFF
# otadata entry states (esp_ota_img_states_t)
NEW = "new"
PENDING = "pending_verify"
VALID = "valid"
INVALID = "invalid"
ABORTED = "aborted"
UNDEFINED = "undefined"

# Default table: MicroPython's OTA layout with a factory app added (issue: factory/ota_0/ota_1/otadata/nvs),
# and a ROMFS partition: MicroPython's ESP32 port maps the data partition labelled "romfs" (subtype
# 0x8f, partitions-4MiB-romfs.csv) and mounts it at /rom; the app runs from it in place (shipping
# mode). Two 256 KB halves: slot A, which the port mounts, and slot B (docs/ota.md).
DEFAULT_TABLE = [
    # label, type, subtype, offset, size
    ["nvs", 1, 0x02, 0x9000, 0x6000],
    ["otadata", 1, 0x00, 0xF000, 0x2000],
    ["factory", 0, 0x00, 0x10000, 0x180000],
    ["ota_0", 0, 0x10, 0x190000, 0x180000],
    ["ota_1", 0, 0x11, 0x310000, 0x180000],
    ["romfs", 1, 0x8F, 0x490000, 0x80000],
]


def _table():
    return vstate.board().get("partitions", DEFAULT_TABLE)


def _ota_labels():
    return [p[0] for p in _table() if p[1] == 0 and 0x10 <= p[2] < 0x20]


def _otadata():
    return vstate.read_json("otadata.json", None) or {
        "entries": [[_EMPTY_SEQ, UNDEFINED], [_EMPTY_SEQ, UNDEFINED]]
    }


def _rollback_enabled():
    return vstate.board().get("rollback", True)


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=_BLOCK):
        if id == Partition.RUNNING:
            label = vstate.read_text("running").strip() or _boot_choice(_otadata())[0]
        elif id == Partition.BOOT:
            label = _boot_choice(_otadata())[0]
        else:
            label = id
        for row in _table():
            if row[0] == label:
                self._row = row
                break
        else:
            raise ValueError("partition not found")
        self.block_size = block_size

    def __repr__(self):
        return "<Partition %s>" % self._row[0]

    def __eq__(self, other):
        return isinstance(other, Partition) and other._row[0] == self._row[0]

    @staticmethod
    def find(type=0, subtype=0xFF, label=None, block_size=_BLOCK):
        found = []
        for row in _table():
            if (
                row[1] == type
                and (subtype == 0xFF or row[2] == subtype)
                and (label is None or row[0] == label)
            ):
                found.append(Partition(row[0], block_size))
        return found

    def info(self):
        r = self._row
        return (r[1], r[2], r[3], r[4], r[0], False)

    # -- block device protocol (writeblocks with an offset does not erase, like the ESP32 port)
    def _file(self):
        name = "flash_" + self._row[0] + ".bin"
        p = vstate.path(name)
        try:
            return open(p, "r+b")
        except OSError:
            with open(p, "wb") as f:
                for _ in range(self._row[4] // _PIECE):
                    f.write(_ERASED)
            return open(p, "r+b")

    def _span(self, block_num, offset, n):
        start = block_num * self.block_size + (offset or 0)
        if start < 0 or start + n > self._row[4]:
            raise OSError(errno.EINVAL, "invalid argument")
        return start

    def readblocks(self, block_num, buf, offset=0):
        start = self._span(block_num, offset, len(buf))
        with self._file() as f:
            f.seek(start)
            got = f.readinto(buf)
        if got != len(buf):
            raise OSError(errno.EIO, "flash read failed")

    def writeblocks(self, block_num, buf, offset=None):
        start = self._span(block_num, offset, len(buf))
        if offset is None:  # whole blocks: erase first
            for b in range(len(buf) // self.block_size + (1 if len(buf) % self.block_size else 0)):
                self.ioctl(6, block_num + b)
        if vstate.cut is not None:  # a power cut while programming: only the first half gets there
            vstate.cut(
                "flash %s write 0x%x+%d" % (self._row[0], start, len(buf)),
                lambda: self._program(start, memoryview(buf)[: len(buf) // 2]),
            )
        self._program(start, buf)

    # On the chip this is C and costs no heap; here every allocation is at most _PIECE bytes, so the
    # simulation does not fail where the app's heap is fragmented.
    def _program(self, start, buf):
        mv = memoryview(buf)
        with self._file() as f:
            for i in range(0, len(mv), _PIECE):
                piece = mv[i : i + _PIECE]
                n = len(piece)
                f.seek(start + i)
                old = f.read(n)
                # NOR flash: programming can only clear bits
                new = int.from_bytes(old, "little") & int.from_bytes(bytes(piece), "little")
                f.seek(start + i)
                f.write(new.to_bytes(n, "little"))

    def _erase(self, start, n):
        with self._file() as f:
            f.seek(start)
            for _ in range(n // _PIECE):
                f.write(_ERASED)

    def ioctl(self, cmd, arg=None):
        if cmd == 4:
            return self._row[4] // self.block_size
        if cmd == 5:
            return self.block_size
        if cmd == 6:
            start = arg * self.block_size
            if start < 0 or start + _BLOCK > self._row[4]:
                raise OSError(errno.EINVAL, "invalid argument")
            if vstate.cut is not None:  # a power cut while erasing: half of the block erased
                vstate.cut(
                    "flash %s erase 0x%x" % (self._row[0], start), lambda: self._erase(start, _BLOCK // 2)
                )
            self._erase(start, self.block_size)
            return 0
        return 0  # init / deinit / sync

    # -- OTA
    def get_next_update(self):
        labels = _ota_labels()
        if not labels:
            raise OSError(errno.ENOENT, "no OTA app partitions")
        running = self._row[0]
        if running in labels:
            return Partition(labels[(labels.index(running) + 1) % len(labels)])
        return Partition(labels[0])

    def set_boot(self):
        label = self._row[0]
        data = _otadata()
        if self._row[1] != Partition.TYPE_APP:
            raise OSError(errno.EINVAL, "invalid argument")
        labels = _ota_labels()
        if label not in labels:  # factory: erase otadata, like esp_ota_set_boot_partition
            data = {"entries": [[_EMPTY_SEQ, UNDEFINED], [_EMPTY_SEQ, UNDEFINED]]}
            vstate.write_json("otadata.json", data)
            return
        if not _image_ok(label):
            raise OSError(errno.EINVAL, "invalid argument")  # ESP_ERR_OTA_VALIDATE_FAILED
        n = len(labels)
        i = labels.index(label)
        seqs = [e[0] for e in data["entries"] if e[0] != _EMPTY_SEQ]
        top = max(seqs) if seqs else 0
        seq = top + 1
        while (seq - 1) % n != i:
            seq += 1
        # overwrite the older entry, as the two otadata sectors alternate
        slot = (
            0
            if data["entries"][0][0] == _EMPTY_SEQ
            or (data["entries"][1][0] != _EMPTY_SEQ and data["entries"][0][0] < data["entries"][1][0])
            else 1
        )
        data["entries"][slot] = [seq, NEW if _rollback_enabled() else UNDEFINED]
        vstate.write_json("otadata.json", data)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        if not _rollback_enabled():
            raise OSError(ESP_ERR_NOT_FOUND, "rollback not enabled in the bootloader")
        data = _otadata()
        running = vstate.read_text("running").strip()
        idx = _entry_for(data, running)
        if idx is not None and data["entries"][idx][1] == PENDING:
            data["entries"][idx][1] = VALID
            vstate.write_json("otadata.json", data)

    @staticmethod
    def mark_app_invalid_rollback_and_reboot():
        data = _otadata()
        idx = _entry_for(data, vstate.read_text("running").strip())
        if idx is not None:
            data["entries"][idx][1] = INVALID
            vstate.write_json("otadata.json", data)
        import vmachine

        vmachine.reset()


def _entry_for(data, label):
    labels = _ota_labels()
    if label not in labels:
        return None
    best = None
    for i in range(2):
        seq = data["entries"][i][0]
        if seq != _EMPTY_SEQ and labels[(seq - 1) % len(labels)] == label:
            if best is None or seq > data["entries"][best][0]:
                best = i
    return best


def _image_ok(label):
    """Hook for the image checks of the bootloader (set by vboot/image support); True by default."""
    return image_check is None or image_check(label)


image_check = None  # callable(label) -> bool, installed by the virtual board's image support


def vimage_check(label):
    """The bootloader's image check (vimage.py), loaded for the check and dropped again."""
    import sys

    import vimage

    try:
        return vimage.check(label)
    finally:
        sys.modules.pop("vimage", None)


def _boot_choice(data):
    """(label, entry index or None): the bootloader's choice without side effects."""
    labels = _ota_labels()
    order = sorted(
        range(2),
        key=lambda i: -1 if data["entries"][i][0] == _EMPTY_SEQ else data["entries"][i][0],
        reverse=True,
    )
    for i in order:
        seq, state = data["entries"][i]
        if seq == _EMPTY_SEQ or not labels or state in (INVALID, ABORTED):
            continue
        label = labels[(seq - 1) % len(labels)]
        if _image_ok(label):
            return label, i
    factory = [r[0] for r in _table() if r[1] == 0 and r[2] == 0x00]
    return (factory[0] if factory else (labels[0] if labels else None)), None


def bootloader():
    """Run the second-stage bootloader's OTA rule once per (virtual) power-up; returns the label booted.

    NEW -> PENDING_VERIFY and boot it; an entry still PENDING_VERIFY at the next boot was never
    confirmed: ABORTED, and the previous app boots (rollback).
    """
    data = _otadata()
    changed = False
    while True:
        label, idx = _boot_choice(data)
        if idx is None:
            break
        state = data["entries"][idx][1]
        if state == PENDING and _rollback_enabled():
            data["entries"][idx][1] = ABORTED
            changed = True
            continue
        if state == NEW and _rollback_enabled():
            data["entries"][idx][1] = PENDING
            changed = True
        break
    if changed:
        vstate.write_json("otadata.json", data)
    vstate.write_bytes("running", (label or "").encode())
    return label
