# Simulated ESP32 flash partitions backed by files, and the second-stage bootloader's OTA selection
# and rollback rule (otadata kept in otadata.json). Reached as esp32.Partition (see vesp32).
import errno

import vstate

ESP_ERR_NOT_FOUND = -261  # what mark_app_valid_cancel_rollback() raises without bootloader rollback
_BLOCK = 4096
_ERASED = b"\xff" * _BLOCK
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


# {flash file: open file} in the hardware process (vhwd sets it): each partition's file is opened once
# per boot. Its writes are unbuffered (MicroPython), so a power cut (SIGKILL) loses none of them. None
# (in-process fakes of the host tests): opened and closed at every call, as files may be replaced.
keep = None


_tides = {}  # with keep: {flash file: {block: offset in it from which the block is erased}}


def _blank(b):
    """Are the bytes b all erased (0xFF)?"""
    i = 0
    while i < len(b):
        k = min(len(b) - i, _BLOCK)
        if b[i : i + k] != (_ERASED if k == _BLOCK else _ERASED[:k]):
            return False
        i += k
    return True


def _fill(f, n):
    """n erased bytes (0xFF) into the open file f, at its position."""
    while n > 0:
        k = n if n < _BLOCK else _BLOCK
        f.write(_ERASED if k == _BLOCK else _ERASED[:k])
        n -= k


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
        self._kf = self._kt = None  # with keep: the open flash file and its erased tails

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
    def path(self):
        """The flash file of this partition (absolute: the device process reads it, from elsewhere)."""
        p = vstate.path("flash_" + self._row[0] + ".bin")
        if p[:1] != "/":
            import os

            p = os.getcwd() + "/" + p
        return p

    def _file(self):
        f = self._kf  # kept open (keep): looked up once per object
        if f is not None:
            return f
        p = vstate.path("flash_" + self._row[0] + ".bin")
        f = keep.get(p) if keep is not None else None
        if f is None:
            try:
                f = open(p, "r+b")
            except OSError:
                with open(p, "wb") as f:
                    _fill(f, self._row[4])
                f = open(p, "r+b")
            if keep is not None:
                keep[p] = f
        if keep is not None:
            self._kf = f
            self._kt = _tides.setdefault(p, {})
        return f

    @staticmethod
    def _done(f):
        if keep is None:
            f.close()

    def _span(self, block_num, offset, n):
        start = block_num * self.block_size + (offset or 0)
        if start < 0 or start + n > self._row[4]:
            raise OSError(errno.EINVAL, "invalid argument")
        return start

    def readblocks(self, block_num, buf, offset=0):
        start = self._span(block_num, offset, len(buf))
        f = self._file()
        try:
            f.seek(start)
            got = f.readinto(buf)
        finally:
            self._done(f)
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

    # NOR flash: programming can only clear bits: over programmed bytes the result is old AND new (byte
    # by byte: no big integers). The app writes onto erased flash (each block erased before its first
    # write): the bytes then go in as they are, and where the hardware process knows the place is
    # erased (_tides) the old bytes are not even read.
    def _program(self, start, buf):
        n = len(buf)
        f = self._file()
        t = self._kt
        b, o = start // _BLOCK, start % _BLOCK
        try:
            f.seek(start)
            if t is None or t.get(b, _BLOCK) > o or o + n > _BLOCK:
                old = f.read(n)
                if not _blank(old):
                    buf = bytearray(buf)
                    for i in range(n):
                        if old[i] != 0xFF:
                            buf[i] &= old[i]
                f.seek(start)
            f.write(buf)
        finally:
            self._done(f)
        if t is not None:  # each touched block is erased past the written bytes, if it was before
            end = start + n
            for k in range(b, (end - 1) // _BLOCK + 1):
                m = t.get(k)
                if m is not None:
                    m = max(m, min(end - k * _BLOCK, _BLOCK))
                    if m < _BLOCK:
                        t[k] = m
                    else:
                        del t[k]

    def _erase(self, start, n):
        f = self._file()
        try:
            f.seek(start)
            _fill(f, n)
        finally:
            self._done(f)
        t = self._kt
        if t is not None:  # blocks erased to their end are erased from the erase's start in them
            end = start + n
            for k in range(start // _BLOCK, (end - 1) // _BLOCK + 1):
                if end >= (k + 1) * _BLOCK:
                    t[k] = min(t.get(k, _BLOCK), max(start - k * _BLOCK, 0))

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
