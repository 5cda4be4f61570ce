# App-bundle installer: stream the bundle into the inactive slot directory (ota/a or ota/b) through
# the app's one buffer, check every file's and the whole bundle's size and sha256, read the files back,
# and only then switch the slot pointer (state.switch_slot: one atomic rename). Format:
# tools/twtools/build.py. Loaded by job.py for a bundle in this form only (a bundle in ROMFS form goes
# to romfs.py: job.py tells them apart by the first bytes).
import hashlib
import os
import sys
from binascii import hexlify

from micropython import const

from twomes.errors import Error
from twomes.update import state

_BAD = const(-1)  # errors.Error status: not what the server promised
_MAGIC = b"TWOMES-BUNDLE 2"
_LINE_MAX = const(128)
_FILES_MAX = const(200)
_PATH_OK = "abcdefghijklmnopqrstuvwxyz0123456789_./"


def hexdigest(h):
    """Hex of a hashlib digest, in one piece (MicroPython's hashlib has no hexdigest)."""
    return hexlify(h.digest()).decode()


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
    """Reads exactly the promised number of bytes from a download, hashing them as they arrive. Header
    lines are taken from whole reads of up to a line's size, not byte by byte: the bytes after a line
    wait in buf[pos:end] and are what the next read() returns first."""

    def __init__(self, resp, size, buf, have):
        self.resp = resp
        self.buf = buf
        self.sha = hashlib.sha256(buf[:have])  # (the first `have` bytes are in buf already)
        self.left = size - have  # bytes of the download not fetched yet
        self.pos, self.end = 0, have  # fetched, not yet consumed: buf[pos:end]

    async def _fetch(self, at, n):
        """The next n bytes of the download (n <= left) into buf[at:at + n], hashed."""
        buf = self.buf
        got = 0
        while got < n:
            mv = buf[at + got : at + n]
            k = self.resp.read_now(mv)  # what has come in already: no await, no coroutine
            if k is None:
                k = await self.resp.readinto(mv)
            if not k:
                raise Error(_BAD, "download ended early")
            got += k
        self.sha.update(buf[at : at + n])
        self.left -= n

    def pending(self):
        return self.end - self.pos

    async def read(self, n):
        """min(n, len(buf), bytes left) bytes into buf[:n] - always that many, however the network
        splits them, so the writes that follow do not depend on packet sizes; returns the count."""
        k = self.end - self.pos
        n = min(n, len(self.buf), self.left + k)
        if k > n:
            k = n
        if k:  # the bytes after the last header line first (moved down: never onto unread ones)
            self.buf[0:k] = self.buf[self.pos : self.pos + k]
            self.pos += k
        if n > k:
            await self._fetch(k, n - k)
        return n

    async def line(self, out):
        """One header line (without the newline) into the bytearray `out`; returns it as str."""
        buf = self.buf
        n = 0
        while True:
            if self.pos == self.end:
                k = min(len(out), self.left)
                if not k:
                    raise Error(_BAD, "download ended early")
                await self._fetch(0, k)
                self.pos, self.end = 0, k
            i = self.pos
            end = self.end
            while i < end and buf[i] != 10:
                i += 1
            m = i - self.pos
            if n + m >= len(out):
                raise Error(_BAD, "bundle header line too long")
            out[n : n + m] = buf[self.pos : i]
            n += m
            if i < end:  # the newline
                self.pos = i + 1
                break
            self.pos = end
        try:
            return str(memoryview(out)[:n], "utf-8")
        except UnicodeError:
            raise Error(_BAD, "bundle header is not text")


async def install_release(app, resp, rel, prev, have):
    """Install a bundle release in this form from the download `resp` (job.py opened it; its first
    `have` bytes are at the start of the app's buffer; the caller closes it; `prev`: the slot that runs
    now, None for the deployed app). Raises Error (a bad bundle, no answer); on success the new slot is
    new: the next boot runs it, and it must confirm itself to stay.

    Format (tools/twtools/build.py): "TWOMES-BUNDLE 2", "version V", "mpy M", "files N", then N times
    "file PATH SIZE SHA256" followed by SIZE bytes. Every line is checked before anything is written
    for it; nothing needs the whole manifest in RAM."""
    from twomes import VERSION
    from twomes.log import log

    buf = app.buffers()[0]
    pointer = state.slot() or {}  # none, or damaged: otaboot boots the factory app
    size = rel["size"]
    s = _Stream(resp, size, buf, have)
    n = await s.read(len(_MAGIC) + 1)
    if bytes(buf[:n]) != _MAGIC + b"\n":
        raise Error(_BAD, "not an app bundle")
    lb = bytearray(_LINE_MAX)
    head = {}
    for key in ("version", "mpy", "files"):
        k, _, v = (await s.line(lb)).partition(" ")
        if k != key or not v:
            raise Error(_BAD, "bad bundle header")
        head[key] = v
    version = head["version"]
    if version != rel["version"]:
        raise Error(_BAD, "bundle is version %s, release says %s" % (version, rel["version"]))
    tag = mpy_tag()
    if tag is not None and head["mpy"] != tag:
        raise Error(_BAD, "bundle built for mpy %s, this firmware runs %s" % (head["mpy"], tag))
    try:
        count = int(head["files"])
    except ValueError:
        raise Error(_BAD, "bad bundle header")
    if not 0 < count <= _FILES_MAX:
        raise Error(_BAD, "bad bundle header")
    head = None  # done with: what is not needed any more goes back to the heap as early as it can
    slot = "b" if pointer.get("slot") == "a" else "a"
    root = "ota/" + slot
    makedirs("ota")
    rmtree(root)
    makedirs(root)
    log("ota", "installing %s into slot %s (%d files, %d bytes)" % (version, slot, count, size))
    # what was written, for the read-back check and the slot's manifest
    with open(root + "/manifest.txt", "w") as man:
        man.write("version %s\n" % version)
        for _ in range(count):
            parts = (await s.line(lb)).split(" ")
            try:
                path, fsize, fsha = parts[1], int(parts[2]), parts[3]
            except (IndexError, ValueError):
                raise Error(_BAD, "bad file entry in bundle")
            if parts[0] != "file" or len(parts) != 4 or not check_path(path) or fsize < 0 or len(fsha) != 64:
                raise Error(_BAD, "bad file entry in bundle")
            d = path.rfind("/")
            if d > 0:
                makedirs(root + "/" + path[:d])
            h = hashlib.sha256()
            left = fsize
            with open(root + "/" + path, "wb") as out:
                while left:
                    n = await s.read(left)
                    out.write(buf[:n])
                    h.update(buf[:n])
                    left -= n
            if hexdigest(h) != fsha:
                raise Error(_BAD, "%s: sha256 mismatch" % path)
            man.write("%s %d %s\n" % (path, fsize, fsha))
    parts = h = lb = None
    if s.left != 0 or s.pending():
        raise Error(_BAD, "bundle size mismatch")
    if await resp.readinto(buf[:1]):
        raise Error(_BAD, "download longer than promised")
    if hexdigest(s.sha) != rel["sha256"]:
        raise Error(_BAD, "bundle sha256 mismatch")
    s = None
    # read every file back from the filesystem and check it against the slot's manifest
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
                raise Error(_BAD, "%s: read-back mismatch" % path)
    state.switch_slot(slot, version, prev, VERSION, app.cfg.confirm_boots)
    log("ota", "slot %s holds %s, verified; it runs after the reboot" % (slot, version))
