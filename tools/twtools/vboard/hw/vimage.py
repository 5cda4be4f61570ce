# ESP32 app images on the virtual board (format: tools/twtools/vboard/images.py). The bootloader's image
# check - header, chip id, segments, checksum, appended SHA-256 - and the ROM's job of mapping the
# booted image's code: its frozen app (an app bundle after esp_app_desc_t) is unpacked once per image
# into <state>/frozen/<label>-<sha>/, which vfw puts on sys.path where the chip has '.frozen'.
# Runs at boot inside the unix port, before the app; vboot drops it afterwards.
import hashlib
import os

import vstate

_HDR = 24  # image header (8) + extended header (16)
_DESC = 32  # esp_app_desc_t: right after the header and the first segment's header
_CHUNK = 512  # small reads: set_boot runs this check inside the app's heap


def _flash(label):
    return vstate.path("flash_" + label + ".bin")


def _size(label):
    for row in vstate.board().get("partitions") or _table():
        if row[0] == label:
            return row[4]
    return 0


def _table():
    import vflash

    return vflash.DEFAULT_TABLE


def _u32(b, i):
    return b[i] | b[i + 1] << 8 | b[i + 2] << 16 | b[i + 3] << 24


def scan(f, limit, verify=True):
    """Walk an image from the open file `f` (partition of `limit` bytes). Returns the appended SHA-256
    (bytes) when the image is well formed (and, with verify, its checksum and hash match), else None."""
    head = f.read(_HDR)
    if len(head) != _HDR or head[0] != 0xE9 or head[23] != 1 or head[12] | head[13] << 8 != 0:
        return None  # not an image, no hash appended, or not for the ESP32 (chip id 0)
    nseg = head[1]
    if not 0 < nseg <= 16:
        return None
    h = hashlib.sha256(head) if verify else None
    acc = 0
    pos = _HDR
    for _ in range(nseg):
        sh = f.read(8)
        if len(sh) != 8:
            return None
        n = _u32(sh, 4)
        pos += 8 + n
        if pos + 48 > limit:
            return None
        if not verify:
            f.seek(pos)
            continue
        h.update(sh)
        while n:
            data = f.read(min(n, _CHUNK))
            if not data:
                return None
            n -= len(data)
            h.update(data)
            acc ^= int.from_bytes(data, "little")
    tail_len = 16 - pos % 16  # zero padding, then the checksum as the last byte of a 16-byte block
    tail = f.read(tail_len + 32)
    if len(tail) != tail_len + 32:
        return None
    if verify:
        x = 0xEF
        for b in acc.to_bytes(_CHUNK, "little"):
            x ^= b
        h.update(tail[:tail_len])
        if tail[tail_len - 1] != x or h.digest() != tail[tail_len:]:
            return None
    return tail[tail_len:]


def check(label):
    """The bootloader's verification of the image in app partition `label` (never raises)."""
    try:
        with open(_flash(label), "rb") as f:
            return scan(f, _size(label)) is not None
    except (OSError, ValueError, IndexError):
        return False


def version(label):
    """The version in the image's esp_app_desc_t, or None."""
    try:
        with open(_flash(label), "rb") as f:
            f.seek(_DESC)
            d = f.read(48)
    except OSError:
        return None
    if len(d) != 48 or _u32(d, 0) != 0xABCD5432:
        return None
    return bytes(d[16:48]).split(b"\0")[0].decode()


def _rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        p = path + "/" + name
        if os.stat(p)[0] & 0x4000:
            _rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _mkdirs(path):
    cur = None
    for part in path.split("/"):
        cur = part if cur is None else cur + "/" + part
        if cur:
            try:
                os.mkdir(cur)
            except OSError:
                pass


def load(label):
    """Directory of the frozen app of the booted partition `label` (None for the factory app, whose
    code is the filesystem's /lib). Unpacked once per image, atomically (a power cut leaves a .tmp)."""
    if not label or not label.startswith("ota_"):
        return None
    with open(_flash(label), "rb") as f:
        sha = scan(f, _size(label), False)
        if sha is None:
            return None
        tag = "".join("%02x" % b for b in sha[:8])
        root = vstate.path("frozen")
        _mkdirs(root)
        dest = root + "/" + label + "-" + tag
        try:
            os.stat(dest)
            return dest
        except OSError:
            pass
        for name in os.listdir(root):  # older images of this partition, interrupted unpacks
            if name.startswith(label + "-"):
                _rmtree(root + "/" + name)
        tmp = dest + ".tmp"
        _mkdirs(tmp)
        f.seek(_DESC + 256)  # the bundle (tools/twtools/build.py, format 2): header lines, then files
        f.readline()  # TWOMES-BUNDLE 2
        f.readline()  # version
        f.readline()  # mpy
        for _ in range(int(f.readline().split()[1])):
            _, path, size, _sha = f.readline().decode().split()
            size = int(size)
            d = path.rfind("/")
            if d > 0:
                _mkdirs(tmp + "/" + path[:d])
            with open(tmp + "/" + path, "wb") as out:
                while size:
                    data = f.read(min(size, _CHUNK))
                    out.write(data)
                    size -= len(data)
    os.rename(tmp, dest)
    return dest
