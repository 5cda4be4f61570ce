# App-bundle updates: stream the bundle into the inactive slot directory through one buffer, check
# every file's and the whole bundle's size and sha256, read the files back, and only then switch the
# slot pointer (ota/state.json, one atomic rename). Format: tools/twtools/build.py.
import hashlib
import json
import os

from micropython import const

import otaboot
from twomes.errors import BadImage

_MAGIC = b"TWOMES-BUNDLE 1 "
_MANIFEST_MAX = const(4096)
_SLOTS = ("a", "b")
_PATH_OK = "abcdefghijklmnopqrstuvwxyz0123456789_./"


def hexdigest(h):
    return "".join("%02x" % b for b in h.digest())


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
    import sys

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
        """Up to n (<= len(buf)) bytes into buf; returns the count (never 0 before the end)."""
        n = min(n, len(self.buf), self.left)
        if n <= 0:
            return 0
        got = await self.resp.readinto(self.buf[:n])
        if not got:
            raise BadImage("download ended early")
        self.left -= got
        self.sha.update(self.buf[:got])
        return got

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


async def install_bundle(resp, release, buf, running_version, max_boots, log):
    """Install a bundle from an open download response. Raises BadImage / NetError; on success the
    new slot is pending: the next boot runs it, and it must confirm itself to stay."""
    size = release["size"]
    if resp.length is not None and resp.length != size:
        raise BadImage("server sends %d bytes, release says %d" % (resp.length, size))
    slot = free_slot()
    root = "ota/" + slot
    makedirs("ota")
    rmtree(root)
    makedirs(root)
    s = _Stream(resp, size, buf)
    # header line
    head = bytearray(32)
    i = 0
    while True:
        await s.exactly(1, memoryview(head)[i : i + 1])
        if head[i] == 10:
            break
        i += 1
        if i >= len(head):
            raise BadImage("not an app bundle")
    if bytes(head[: len(_MAGIC)]) != _MAGIC:
        raise BadImage("not an app bundle")
    try:
        mlen = int(bytes(head[len(_MAGIC) : i]))
    except ValueError:
        raise BadImage("bad bundle header")
    if not 0 < mlen <= _MANIFEST_MAX:
        raise BadImage("bundle manifest too large")
    raw = bytearray(mlen)
    await s.exactly(mlen, raw)
    try:
        man = json.loads(raw)
        version, files = man["version"], man["files"]
    except (ValueError, KeyError, TypeError):
        raise BadImage("bad bundle manifest")
    del raw
    if version != release["version"]:
        raise BadImage("bundle is version %s, release says %s" % (version, release["version"]))
    tag = mpy_tag()
    if tag is not None and man.get("mpy") != tag:
        raise BadImage("bundle built for mpy %s, this firmware runs %s" % (man.get("mpy"), tag))
    total = i + 1 + mlen
    for f in files:
        if not (
            isinstance(f, list)
            and len(f) == 3
            and isinstance(f[0], str)
            and check_path(f[0])
            and isinstance(f[1], int)
            and f[1] >= 0
            and isinstance(f[2], str)
            and len(f[2]) == 64
        ):
            raise BadImage("bad file entry in bundle")
        total += f[1]
    if total != size:
        raise BadImage("bundle contents do not add up to its size")
    log("ota", "installing %s into slot %s (%d files, %d bytes)" % (version, slot, len(files), size))
    for path, fsize, fsha in files:
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
    if s.left != 0:
        raise BadImage("bundle size mismatch")
    extra = await resp.readinto(buf[:1])
    if extra:
        raise BadImage("download longer than promised")
    if hexdigest(s.sha) != release["sha256"]:
        raise BadImage("bundle sha256 mismatch")
    # read everything back from the filesystem before it may become active
    for path, fsize, fsha in files:
        h = hashlib.sha256()
        n_total = 0
        with open(root + "/" + path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(buf[:n])
                n_total += n
        if n_total != fsize or hexdigest(h) != fsha:
            raise BadImage("%s: read-back mismatch" % path)
    with open(root + "/manifest.json", "w") as f:
        f.write(json.dumps({"version": version, "sha256": release["sha256"]}))
    cur = slot_state()
    otaboot.write(
        {
            "slot": slot,
            "state": "new",
            "boots": 0,
            "prev": cur.get("slot"),
            "prev_version": running_version,
            "version": version,
            "max_boots": max_boots,
        }
    )
    log("ota", "slot %s holds %s, verified; it runs after the reboot" % (slot, version))
    return version
