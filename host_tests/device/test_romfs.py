# The ROMFS bundle installer (twomes/update/romfs.py): an image streamed into a slot of the simulated
# "romfs" partition, read back and verified; on MicroPython the written slot is mounted with the
# port's own VfsRom and code is imported from it.
import hashlib
import sys
from binascii import hexlify

import romfsutil
import vflash

import support
from twomes.errors import Error
from twomes.update import romfs

_MP = sys.implementation.name == "micropython"


def _sha(b):
    return hexlify(hashlib.sha256(b).digest()).decode()


class _Resp:
    """A download: readinto() fills at most the next chunk size (cycling), 0 at the end; read_now() the
    same without waiting, except every third call, when nothing has come in yet (None: the installer
    awaits readinto); `stop` ends the body early."""

    def __init__(self, data, sizes=(7, 300, 1000, 13), stop=None):
        self.data = data
        self.pos = 0
        self.sizes = sizes
        self.i = 0
        self.end = len(data) if stop is None else stop
        self.waits = self.nows = 0

    def read_now(self, mv):
        self.nows += 1
        if self.nows % 3 == 0:
            return None
        return self._take(mv)

    async def readinto(self, mv):
        self.waits += 1
        return self._take(mv)

    def _take(self, mv):
        n = min(len(mv), self.sizes[self.i % len(self.sizes)], self.end - self.pos)
        self.i += 1
        mv[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def _part():
    support.new_board()
    return vflash.Partition("romfs")


def _slot_bytes(part, first, n):
    buf = bytearray(n)
    part.readblocks(first, buf)
    return bytes(buf)


def _install(part, index, img, version="2.0.0", sha=None, size=None, resp=None, buf=None):
    first, count = romfs.slot(part, index)
    return support.run(
        romfs.install(
            resp or _Resp(img),
            part,
            first,
            count,
            len(img) if size is None else size,
            sha or _sha(img),
            version,
            buf or bytearray(1024),
        )
    )


def _mount_and_import(img):
    """MicroPython: the bytes mount as a ROMFS and its code runs."""
    if not _MP:
        return
    import vfs

    vfs.mount(vfs.VfsRom(img), "/t-rom")
    sys.path.insert(0, "/t-rom")
    try:
        import hello
        import pkg.mod

        assert hello.f() == 42 and pkg.mod.X == "in flash"
    finally:
        sys.path.remove("/t-rom")
        for name in ("hello", "pkg.mod", "pkg"):
            sys.modules.pop(name, None)
        vfs.umount("/t-rom")


def _mounts(img):
    if not _MP:
        return img[:3] == romfs.MAGIC
    import vfs

    try:
        vfs.VfsRom(img)
        return True
    except OSError:
        return False


def test_slots_are_the_two_halves_of_the_partition():
    part = _part()
    blocks = part.ioctl(4, 0)
    assert romfs.slot(part, 0) == (0, blocks // 2)
    assert romfs.slot(part, 1) == (blocks // 2, blocks // 2)


def test_image_is_streamed_verified_and_mounts():
    part = _part()
    img = romfsutil.app("2.0.0", extra=b"# " + b"x" * 9000 + b"\n")  # spans three 4 KB blocks
    _install(part, 1, img)
    first, _ = romfs.slot(part, 1)
    got = _slot_bytes(part, first, len(img))
    assert got == img
    assert _slot_bytes(part, 0, 16) == b"\xff" * 16  # slot A untouched
    assert support.run(romfs.verify(part, first, len(img), _sha(img), bytearray(512)))
    _mount_and_import(got)


def test_bytes_already_received_are_taken_without_an_await():
    part = _part()
    img = romfsutil.app("2.0.0", extra=b"# " + b"x" * 9000 + b"\n")
    resp = _Resp(img)
    _install(part, 1, img, resp=resp)
    first, _ = romfs.slot(part, 1)
    assert _slot_bytes(part, first, len(img)) == img
    # readinto is awaited only when read_now had nothing (every third call here), never before asking
    assert resp.nows > 3 and resp.waits == resp.nows // 3


def test_odd_sizes_and_a_small_buffer():
    part = _part()
    img = romfsutil.app("2.0.1", extra=b"#" * 335 + b"\n")
    assert len(img) % 4  # a short last piece, padded with 0xFF
    _install(part, 0, img, version="2.0.1", buf=bytearray(256), resp=_Resp(img, sizes=(1, 2, 5000)))
    assert _slot_bytes(part, 0, len(img)) == img
    tail = _slot_bytes(part, 0, len(img) + 8)[len(img) :]
    assert tail == b"\xff" * 8


def test_download_cut_short_leaves_a_slot_that_does_not_mount():
    part = _part()
    img = romfsutil.app("2.0.0", extra=b"#" * 6000 + b"\n")
    e = support.raises(Error, _install, part, 1, img, "2.0.0", None, None, _Resp(img, stop=5000))
    assert e.status == 0
    first, _ = romfs.slot(part, 1)
    got = _slot_bytes(part, first, len(img))
    assert got[:4] == b"\xff" * 4 and not _mounts(got)  # the magic is written last
    assert got[4:4096] == img[4:4096]  # the whole buffers that came


def test_wrong_sha256_is_never_made_mountable():
    part = _part()
    img = romfsutil.app("2.0.0")
    e = support.raises(Error, _install, part, 1, img, "2.0.0", "0" * 64)
    assert e.status == -1
    first, _ = romfs.slot(part, 1)
    assert not _mounts(_slot_bytes(part, first, len(img)))


def test_head_is_checked_before_anything_is_written():
    part = _part()
    old = romfsutil.app("1.0.0")
    _install(part, 1, old, version="1.0.0")
    first, _ = romfs.slot(part, 1)
    new = romfsutil.app("2.0.0")
    cases = [  # (download, release version, what the error says)
        (new, "2.0.1", "version 2.0.0"),  # another version than the release
        (b"TWOMES-BUNDLE 2\n" + b"\0" * 100, "2.0.0", "not a ROMFS"),
        (new + b"\0\0", "2.0.0", "release says"),  # the image's own length is not the release's
        (romfsutil.image(romfsutil.file("hello.py", b"pass\n" + b"#" * 64)), "2.0.0", "version"),
    ]
    for img, version, word in cases:
        e = support.raises(Error, _install, part, 1, img, version)
        assert e.status == -1 and word in str(e), str(e)
        assert _slot_bytes(part, first, len(old)) == old  # nothing written


def test_image_larger_than_the_slot_is_refused():
    part = _part()
    img = romfsutil.app("2.0.0")
    _, count = romfs.slot(part, 1)
    e = support.raises(Error, _install, part, 1, img, "2.0.0", None, count * 4096 + 2)
    assert e.status == -1 and "does not fit" in str(e)


def test_verify_reads_the_flash_not_the_download():
    part = _part()
    img = romfsutil.app("2.0.0")
    _install(part, 1, img)
    first, _ = romfs.slot(part, 1)
    part.writeblocks(first, bytearray(4), 40)  # flash bits flipped after the install
    assert not support.run(romfs.verify(part, first, len(img), _sha(img), bytearray(1024)))
