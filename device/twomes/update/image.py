# ESP32 app-image installer (release kind "image"): the image is streamed into the next OTA partition
# through the app's one 1 KB buffer (each 4 KB block erased just before its first write), resumable
# after a dropped connection or a power cut (HTTP Range from the last durable offset, dl_state: every
# 64 KB), verified by reading the flash back, and only then made bootable (img_new committed first;
# formats: state.py). The new image must confirm itself to the server after the reboot (confirm.py);
# until then the bootloader rolls it back at the next reset. Loaded by job.py for an image release only
# (docs/ota.md).
import asyncio
import gc
import hashlib
from binascii import hexlify

from micropython import const

from twomes.errors import Error
from twomes.log import log
from twomes.update import state

# errors.Error statuses: no (readable) answer; not what the server promised
_NET = const(0)
_BAD = const(-1)
_BLOCK = const(4096)  # flash erase unit
_CHECKPOINT = const(65536)  # durable resume offset every 64 KB
_TRIES = const(4)  # connections per install attempt (the first and three resumes)
_HEAD = const(80)  # image header (24) + first segment header (8) + esp_app_desc_t up to version[32]
# The whole download must finish within SLACK_S + size / MIN_BPS seconds: a server that drips a byte
# now and then is cut off (the per-read timeout alone would wait forever). Module globals: tests
# shorten them.
MIN_BPS = 2048
SLACK_S = 60


def check_head(b, version):
    """The first _HEAD bytes of an image: an ESP32 app image of `version`? Raises Error (_BAD)."""
    if b[0] != 0xE9:
        raise Error(_BAD, "not an ESP32 app image (magic %02x)" % b[0])
    chip = b[12] | b[13] << 8
    if chip != 0:
        raise Error(_BAD, "image is for another chip (chip id %d, this is an ESP32: 0)" % chip)
    if not 0 < b[1] <= 16:
        raise Error(_BAD, "bad image header (%d segments)" % b[1])
    if (b[32] | b[33] << 8 | b[34] << 16 | b[35] << 24) != 0xABCD5432:
        raise Error(_BAD, "image has no app description")
    v = bytes(b[48:80])
    try:
        v = (v[: v.find(b"\0")] if b"\0" in v else v).decode()
    except UnicodeError:
        v = "?"
    if v != version:
        raise Error(_BAD, "image is version %s, release says %s" % (v, version))


async def install(app, server, rel):
    """Download (`server.open_release`), verify and switch to the image of release `rel`. Raises Error
    (a bad image, no answer, an HTTP status); on return the next boot runs the new image (the caller
    reboots)."""
    board, st, buf = app.board, app.st, app.buffers()[0]
    size, want, version = rel["size"], rel["sha256"], rel["version"]
    try:
        part = board.partition("next")
        label = part.info()[4]
        cap = part.ioctl(4, 0) * part.ioctl(5, 0)
    except (OSError, AttributeError) as e:
        raise Error(_BAD, "no OTA partition to install an image into (%s)" % e)
    if size > cap:
        raise Error(_BAD, "image of %d bytes does not fit partition %s (%d bytes)" % (size, label, cap))
    if size < _HEAD:
        raise Error(_BAD, "image of %d bytes is too small" % size)
    if _BLOCK % len(buf):
        raise Error(_BAD, "buffer size must divide the flash block size")
    key = state.download_key(rel, label)
    pos = state.download_at(st, key, size, _CHECKPOINT)
    if pos == 0:
        state.download_forget(st)  # before the first erase: a stale offset must never describe new bytes
        gone = state.forget_slot_on(label)
        if gone is not None:
            log("ota", "app bundle %s ran on the image in %s, which is replaced" % (gone, label))
    if 0 < pos < size:
        log("ota", "resuming the download of %s at %d of %d bytes" % (version, pos, size))
    elif pos:
        log("ota", "%s is already in %s: verifying it again" % (version, label))
    try:
        await _fetch(app, server, rel, part, pos, key)
        await verify(part, size, want, version, buf)
    except Error as e:
        if e.status == _BAD:
            state.download_forget(st)  # not worth resuming: the next attempt starts at zero
        raise
    running = board.partition("running").info()[4]
    state.set_image_new(st, version, label, running)
    gc.collect()  # set_boot verifies the whole image (the bootloader's check)
    try:
        part.set_boot()
    except OSError as e:
        state.image_failed(st)
        raise Error(_BAD, "the bootloader refused the image in %s (%s)" % (label, e))
    log("ota", "%s holds %s (%d bytes), verified; it runs after the reboot" % (label, version, size))


async def _fetch(app, server, rel, part, pos, key):
    """Download into the partition from `pos`, resuming after dropped connections and 5xx answers
    (bounded tries, backoff, one overall deadline)."""
    board, st, size = app.board, app.st, rel["size"]
    deadline = board.ticks_add(board.ticks_ms(), (SLACK_S + size // MIN_BPS) * 1000)
    back = app.backoff()
    tries = 0
    at = [pos]  # bytes [0, at[0]) are in flash; _download moves it on
    while at[0] < size:
        tries += 1
        try:
            await _download(app, server, rel, part, at, key, deadline)
        except Error as e:
            pos = at[0]
            if e.status == 416 and pos:
                at[0] = 0  # the server's file is not the one we have half of: start over
                state.download_forget(st)
            elif e.status and e.status < 500:  # a bad image (< 0) or an HTTP status not worth a retry
                raise
            if tries >= _TRIES or board.ticks_diff(deadline, board.ticks_ms()) <= 0:
                raise
            delay = back.next_s()
            log("ota", "download stopped at %d of %d bytes (%s): resuming in %d s" % (pos, size, e, delay))
            await app.sleep_s(delay)


async def _download(app, server, rel, part, at, key, deadline):
    """One connection: from at[0] (or 0 if the server ignores the range) to the end; at[0] follows the
    bytes written, so after an error the caller resumes where this stopped."""
    board, st, buf = app.board, app.st, app.buffers()[0]
    size = rel["size"]
    pos = at[0]
    resp, got = await server.open_release(rel, pos)
    try:
        if got != pos:
            log("ota", "server ignored the range request: downloading %s from the start" % rel["version"])
            pos = at[0] = 0
            state.download_forget(st)
        left = size - pos
        if resp.length != left:
            raise Error(_BAD, "server sends %s bytes, %d expected" % (resp.length, left))
        if pos and not resp.headers.get("content-range", "").endswith("/%d" % size):
            raise Error(_BAD, "server's range is of another file")
        while pos < size:
            n = min(len(buf), size - pos)
            got = 0
            while got < n:
                if board.ticks_diff(deadline, board.ticks_ms()) <= 0:
                    raise Error(_NET, "download too slow (%d of %d bytes)" % (pos + got, size))
                mv = buf[got:n]
                k = resp.read_now(mv)  # what has come in already: no await, no coroutine
                if k is None:
                    k = await resp.readinto(mv)
                if not k:
                    raise Error(_NET, "download ended at %d of %d bytes" % (pos + got, size))
                got += k
            if pos == 0:
                check_head(buf, rel["version"])  # before anything is written
            blk, off = pos // _BLOCK, pos % _BLOCK
            if off == 0:
                part.ioctl(6, blk)  # erase the block just before its first write
            m = (n + 3) & ~3  # flash writes in whole words; the pad (0xFF) leaves erased bits as they are
            for i in range(n, m):
                buf[i] = 0xFF
            part.writeblocks(blk, buf[:m], off)
            pos += n
            at[0] = pos
            if pos % _CHECKPOINT == 0 or pos == size:
                state.download_done(st, key, pos)
    finally:
        await resp.close()


async def verify(part, size, want, version, buf):
    """Read the image back from flash: header, size and sha256 must be the release's."""
    h = hashlib.sha256()
    pos = 0
    while pos < size:
        n = min(len(buf), size - pos)
        part.readblocks(pos // _BLOCK, buf[:n], pos % _BLOCK)
        if pos == 0:
            check_head(buf, version)
        h.update(buf[:n])
        pos += n
        if pos % _CHECKPOINT == 0:
            await asyncio.sleep(0)  # stay responsive (button, LED) while a large image is hashed
    if hexlify(h.digest()).decode() != want:
        raise Error(_BAD, "image read back from flash does not match its sha256")
