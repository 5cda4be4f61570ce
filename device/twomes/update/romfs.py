# ROMFS app bundles, the shipping mode's bundle updates (docs/ota.md "Bundles on a ROMFS board"): a
# bundle is a ROMFS image of the app (tools/twtools/build.py build_romfs) written into the inactive
# slot of the "romfs" partition, read back and verified before anything switches to it.
#
# The "romfs" partition holds two slots of equal size: slot A (its first half, which MicroPython's
# ESP32 port maps and mounts at /rom at start-up) and slot B (its second half). The boot mounts the
# slot the update state names; this module only writes and checks a slot.
#
# Streaming: through the caller's buffer (its size divides the 4 KB erase block), each block erased
# just before its first write, every write whole 4-byte words. The image's first word (the ROMFS magic)
# is written last, after the rest has been read back and its sha256 checked: until then the slot is not
# a ROMFS (erased magic), so a power cut or a failed check never leaves a slot that mounts half an app.
# Loaded only for an update, and unloaded afterwards.
import asyncio
import hashlib
from binascii import hexlify

from micropython import const

from twomes.errors import Error
from twomes.update import state

_NET = const(0)  # errors.Error statuses: no (complete) answer; not what the server promised
_BAD = const(-1)
_BLOCK = const(4096)  # flash erase unit
_WORD = const(4)  # the first word (the ROMFS magic) is programmed last
_YIELD = const(65536)  # the read-back yields to the other tasks every 64 KB
MAGIC = b"\xd2\xcd\x31"  # extmod/vfs_rom.c: record kind 0x14a6b1 ("RM1")
_FS = const(0x14A6B1)
_FILE = const(5)
_DATA = const(2)


def slot(part, index):
    """(first block, block count) of slot `index` of the "romfs" partition: 0 is A (the first half,
    what the port mounts at boot), 1 is B (the second half)."""
    n = part.ioctl(4, 0) // 2
    return index * n, n


def _uint(b, i):
    """The varuint at b[i]: (value, index after it). Raises IndexError past the end."""
    v = 0
    while True:
        c = b[i]
        i += 1
        v = (v << 7) | (c & 0x7F)
        if not c & 0x80:
            return v, i


def check_head(b, size, version):
    """The first bytes of a bundle: a ROMFS image of exactly `size` bytes whose first record is the file
    "version" holding `version` (build_romfs writes it there). Raises Error(_BAD)."""
    try:
        kind, i = _uint(b, 0)
        if kind != _FS:
            raise Error(_BAD, "not a ROMFS image")
        n, i = _uint(b, i)
        if i + n != size:
            raise Error(_BAD, "ROMFS image of %d bytes, release says %d" % (i + n, size))
        kind, i = _uint(b, i)
        _, i = _uint(b, i)
        k, i = _uint(b, i)
        if kind != _FILE or bytes(b[i : i + k]) != b"version":
            raise Error(_BAD, "ROMFS image without its version")
        i += k
        kind, i = _uint(b, i)
        k, i = _uint(b, i)
        if kind != _DATA or i + k > len(b):
            raise Error(_BAD, "ROMFS image without its version")
        v = bytes(b[i : i + k])
    except IndexError:
        raise Error(_BAD, "ROMFS image head too short")
    if v != version.encode():
        raise Error(_BAD, "image is version %s, release says %s" % (v.decode(), version))


async def install_release(app, resp, rel, prev, have):
    """A bundle in ROMFS form from the download `resp` (job.py opened it; its first `have` bytes are at
    the start of the app's buffer; the caller closes it; `prev`: the slot that runs now, None for the
    deployed app): the image into the half of the "romfs" partition that does not run, verified, then
    the slot pointer switched to it (state.switch_slot; the boot mounts it, otaboot; `prev` is what it
    rolls back to). Raises Error."""
    from twomes import VERSION
    from twomes.log import log

    part = app.board.partition("romfs")
    if part is None:
        raise Error(_BAD, "this board has no romfs partition for a ROMFS bundle")
    half = 0 if state.rom_half(prev) == 1 else 1  # the deployed app runs from the first half
    first, count = slot(part, half)
    name = state.rom_slot(half)
    log("ota", "installing %s into slot %s (ROMFS, %d bytes)" % (rel["version"], name, rel["size"]))
    buf = app.buffers()[0]
    await install(resp, part, first, count, rel["size"], rel["sha256"], rel["version"], buf, have)
    if await resp.readinto(memoryview(buf)[:1]):
        raise Error(_BAD, "download longer than promised")
    state.switch_slot(name, rel["version"], prev, VERSION, app.cfg.confirm_boots)
    log("ota", "slot %s holds %s, verified; it runs after the reboot" % (name, rel["version"]))


async def install(resp, part, first, count, size, sha256, version, buf, have=0):
    """Stream `size` bytes from `resp` (`resp.read_now(mv)` -> bytes already received, 0 at the end,
    None: then `await resp.readinto(mv)` -> bytes read, 0 at the end; http.Response) into
    blocks [first, first + count) of `part` through `buf`, read them back, check the sha256, and only
    then write the image's first word (`have`: bytes of the image already at the start of `buf`). Raises Error (_BAD: not the promised image, never to be
    retried as is; _NET: the download stopped early). On return the slot holds the verified image."""
    if _BLOCK % len(buf) or len(buf) < 64:
        raise Error(_BAD, "buffer size must divide the flash block size")
    if size > count * _BLOCK:
        raise Error(_BAD, "image of %d bytes does not fit the slot (%d bytes)" % (size, count * _BLOCK))
    if size < 64:
        raise Error(_BAD, "image of %d bytes is too small" % size)
    pos = 0
    head = None
    while pos < size:
        n = min(len(buf), size - pos)
        got = have if pos == 0 else 0
        while got < n:
            mv = memoryview(buf)[got:n]
            k = resp.read_now(mv)  # what has come in already: no await, no coroutine
            if k is None:
                k = await resp.readinto(mv)
            if not k:
                raise Error(_NET, "download ended at %d of %d bytes" % (pos + got, size))
            got += k
        blk, off = first + pos // _BLOCK, pos % _BLOCK
        if pos == 0:
            check_head(buf, size, version)  # before anything is written
            head = bytes(buf[:_WORD])
        if off == 0:
            part.ioctl(6, blk)  # erase the block just before its first write
        w = n + (-n % _WORD)
        for i in range(n, w):  # a short last piece: 0xFF leaves the erased bytes as they are
            buf[i] = 0xFF
        if pos == 0:
            part.writeblocks(blk, memoryview(buf)[_WORD:w], _WORD)
        else:
            part.writeblocks(blk, memoryview(buf)[:w], off)
        pos += n
    if not await _matches(part, first, size, sha256, buf, head):
        raise Error(_BAD, "slot does not read back as the image (sha256)")
    part.writeblocks(first, head, 0)
    part.readblocks(first, memoryview(buf)[:_WORD], 0)
    if bytes(buf[:_WORD]) != head:
        part.ioctl(6, first)  # not a ROMFS: it must not mount
        raise Error(_BAD, "slot does not read back as the image (first word)")


async def verify(part, first, size, sha256, buf):
    """Does the slot at block `first` hold `size` bytes with this sha256 (hex)? Read from flash."""
    return await _matches(part, first, size, sha256, buf, None)


async def _matches(part, first, size, sha256, buf, head):
    h = hashlib.sha256()
    pos = 0
    while pos < size:
        n = min(len(buf), size - pos)
        mv = memoryview(buf)[:n]
        part.readblocks(first + pos // _BLOCK, mv, pos % _BLOCK)
        if pos == 0 and head is not None:  # not written yet: the bytes that will be
            mv[:_WORD] = head
        h.update(mv)
        pos += n
        if pos % _YIELD == 0:
            await asyncio.sleep(0)
    return hexlify(h.digest()).decode() == sha256
