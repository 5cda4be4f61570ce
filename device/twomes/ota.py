# App-bundle updates: stream the bundle into the inactive slot directory through one buffer, check
# every file's and the whole bundle's size and sha256, read the files back, and only then switch the
# slot pointer (ota/state.json, one atomic rename). Format: tools/twtools/build.py.
import hashlib
import os
import sys

from micropython import const

import otaboot
from twomes import hexdigest
from twomes.errors import BadImage

_MAGIC = b"TWOMES-BUNDLE 2"
_LINE_MAX = const(128)
_FILES_MAX = const(200)
_SLOTS = ("a", "b")
_PATH_OK = "abcdefghijklmnopqrstuvwxyz0123456789_./"


def rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        p = path + "/" + name
        if os.stat(p)[0] & 0x4000:  # directory
            rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def makedirs(path):
    cur = ""
    for part in path.split("/"):
        cur = part if not cur else cur + "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass


def mpy_tag():
    v = getattr(sys.implementation, "_mpy", None)
    return None if v is None else "%d.%d" % (v & 0xFF, (v >> 8) & 3)


def check_path(p):
    if not p or p[0] in "/." or ".." in p or len(p) > 64 or not (p.endswith(".mpy") or p.endswith(".py")):
        return False
    for ch in p:
        if ch not in _PATH_OK:
            return False
    return True


class _Stream:
    """Reads exactly the promised number of bytes from a download, hashing everything it passes on."""

    def __init__(self, resp, size, buf):
        self.resp = resp
        self.left = size
        self.buf = buf
        self.sha = hashlib.sha256()

    async def read(self, n):
        """min(n, len(buf), bytes left) bytes into buf - always that many, however the network splits
        them, so the writes that follow do not depend on packet sizes; returns the count."""
        n = min(n, len(self.buf), self.left)
        got = 0
        while got < n:
            k = await self.resp.readinto(self.buf[got:n])
            if not k:
                raise BadImage("download ended early")
            got += k
        self.left -= n
        self.sha.update(self.buf[:n])
        return n

    async def exactly(self, n, out):
        """n bytes into the bytearray `out` (small things: header, manifest)."""
        mv = memoryview(out)
        got = 0
        while got < n:
            k = await self.read(n - got)
            mv[got : got + k] = self.buf[:k]
            got += k


def slot_state():
    return otaboot.read() or {}


def free_slot():
    st = slot_state()
    return "b" if st.get("slot") == "a" else "a"


async def _line(s, out):
    """One header line (without the newline) from the stream into `out`; returns it as str."""
    mv = memoryview(out)
    n = 0
    while True:
        if n >= len(out):
            raise BadImage("bundle header line too long")
        await s.exactly(1, mv[n : n + 1])
        if out[n] == 10:
            break
        n += 1
    try:
        return bytes(out[:n]).decode()
    except UnicodeError:
        raise BadImage("bundle header is not text")


async def install(online, rel):
    """Download and install a bundle release (entry point used by the online phase)."""
    from twomes import VERSION
    from twomes.log import log

    resp, _ = await online.open_image(rel, 0)
    try:
        await install_bundle(resp, rel, online._buf, VERSION, online.cfg.confirm_boots, log)
    finally:
        await resp.close()


async def install_bundle(resp, release, buf, running_version, max_boots, log):
    """Install a bundle from an open download response. Raises BadImage / NetError; on success the
    new slot is pending: the next boot runs it, and it must confirm itself to stay.

    Format (tools/twtools/build.py): "TWOMES-BUNDLE 2", "version V", "mpy M", "files N", then N times
    "file PATH SIZE SHA256" followed by SIZE bytes. Every line is checked before anything is written
    for it; nothing needs the whole manifest in RAM."""
    size = release["size"]
    if resp.length is not None and resp.length != size:
        raise BadImage("server sends %d bytes, release says %d" % (resp.length, size))
    s = _Stream(resp, size, buf)
    lb = bytearray(_LINE_MAX)
    await s.exactly(len(_MAGIC) + 1, lb)
    if bytes(lb[: len(_MAGIC) + 1]) != _MAGIC + b"\n":
        raise BadImage("not an app bundle")
    head = {}
    for key in ("version", "mpy", "files"):
        k, _, v = (await _line(s, lb)).partition(" ")
        if k != key or not v:
            raise BadImage("bad bundle header")
        head[key] = v
    version = head["version"]
    if version != release["version"]:
        raise BadImage("bundle is version %s, release says %s" % (version, release["version"]))
    tag = mpy_tag()
    if tag is not None and head["mpy"] != tag:
        raise BadImage("bundle built for mpy %s, this firmware runs %s" % (head["mpy"], tag))
    try:
        count = int(head["files"])
    except ValueError:
        raise BadImage("bad bundle header")
    if not 0 < count <= _FILES_MAX:
        raise BadImage("bad bundle header")
    slot = free_slot()
    root = "ota/" + slot
    makedirs("ota")
    rmtree(root)
    makedirs(root)
    log("ota", "installing %s into slot %s (%d files, %d bytes)" % (version, slot, count, size))
    # what was written, for the read-back check and the slot's manifest
    with open(root + "/manifest.txt", "w") as man:
        man.write("version %s\n" % version)
        for _ in range(count):
            parts = (await _line(s, lb)).split(" ")
            try:
                path, fsize, fsha = parts[1], int(parts[2]), parts[3]
            except (IndexError, ValueError):
                raise BadImage("bad file entry in bundle")
            if parts[0] != "file" or len(parts) != 4 or not check_path(path) or fsize < 0 or len(fsha) != 64:
                raise BadImage("bad file entry in bundle")
            d = path.rfind("/")
            if d > 0:
                makedirs(root + "/" + path[:d])
            h = hashlib.sha256()
            left = fsize
            with open(root + "/" + path, "wb") as out:
                while left:
                    n = await s.read(left)
                    out.write(s.buf[:n])
                    h.update(s.buf[:n])
                    left -= n
            if hexdigest(h) != fsha:
                raise BadImage("%s: sha256 mismatch" % path)
            man.write("%s %d %s\n" % (path, fsize, fsha))
    if s.left != 0:
        raise BadImage("bundle size mismatch")
    if await resp.readinto(buf[:1]):
        raise BadImage("download longer than promised")
    if hexdigest(s.sha) != release["sha256"]:
        raise BadImage("bundle sha256 mismatch")
    verify_slot(root, buf)
    prev = slot_state().get("slot")
    if prev and "ota/" + prev not in sys.path:
        prev = None  # that bundle does not run now (it belongs to another image): that image's app does
    otaboot.write(
        {
            "slot": slot,
            "state": "new",
            "boots": 0,
            "prev": prev,
            "prev_version": running_version,
            "version": version,
            "max_boots": max_boots,
        }
    )
    log("ota", "slot %s holds %s, verified; it runs after the reboot" % (slot, version))
    return version


def verify_slot(root, buf):
    """Read every file of a slot back from the filesystem and check it against the slot's manifest."""
    with open(root + "/manifest.txt") as man:
        man.readline()
        for line in man:
            path, fsize, fsha = line.split()
            h = hashlib.sha256()
            total = 0
            with open(root + "/" + path, "rb") as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    h.update(buf[:n])
                    total += n
            if total != int(fsize) or hexdigest(h) != fsha:
                raise BadImage("%s: read-back mismatch" % path)
