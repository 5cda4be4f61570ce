# The virtual board's ROMFS mapping: what the ESP32's flash MMU and MicroPython's start-up do for a
# ROMFS build (ports/esp32 esp32_partition.c, extmod/vfs.c mp_vfs_mount_romfs_protected). Loaded by
# vboot in the device process before boot.py, and dropped again.
#
# On the chip the partition labelled "romfs" is memory-mapped flash: VfsRom reads it in place and the
# bytecode and constants of the .mpy files in it run from there, outside the MicroPython heap. Here the
# same must hold, so the partition is copied once per boot into memory of this process that is not the
# GC heap: the runner reserves it in the process's environment (VBOARD_ROMMAP0..n, filler bytes, the
# last entries of the environment block, which nothing reads after start-up); this module finds it
# (/proc/self/stat: env_start; /proc/self/environ), writes the partition's bytes over it through
# /proc/self/mem and wraps it with uctypes.bytearray_at - a buffer whose bytes are not in the heap.
# The mapping is the partition as it was at power-up (the chip's mapping would follow later writes; the
# app never reads a slot through the mapping in the boot that writes it).
#
# VBOARD_ROM = "<flash file of the partition> <partition size>".
import sys

import uctypes

_KEY = b"VBOARD_ROMMAP"
_PIECE = 2048


def _reserved():
    """(address, length) of the reserved bytes: from the first VBOARD_ROMMAP value to the end of the
    environment block (those entries come last; consecutive strings are consecutive in memory). Read in
    pieces: the block is larger than the heap."""
    with open("/proc/self/stat") as f:
        s = f.read()
    fields = s[s.rfind(")") + 2 :].split()
    env_start, env_end = int(fields[47]), int(fields[48])  # fields 50 and 51 of proc(5)
    del s, fields
    key = _KEY + b"0="
    with open("/proc/self/environ", "rb") as f:
        pos = 0
        tail = b""
        while True:
            piece = f.read(_PIECE)
            if not piece:
                raise OSError("no memory reserved for the ROMFS mapping")
            data = tail + piece
            i = data.find(key)
            if i >= 0:
                start = env_start + pos - len(tail) + i + len(key)
                return start, env_end - 1 - start  # the block's last NUL stays
            pos += len(piece)
            tail = data[-len(key) :]


def _fill(addr, src, size):
    buf = bytearray(_PIECE)
    erased = src is None
    if erased:  # never written: erased flash
        for i in range(_PIECE):
            buf[i] = 0xFF
    with open("/proc/self/mem", "r+b") as m:
        m.seek(addr)
        pos = 0
        while pos < size:
            n = min(_PIECE, size - pos)
            if not erased and src.readinto(buf) < n:
                raise OSError("short flash file " + str(pos))
            m.write(buf if n == _PIECE else memoryview(buf)[:n])
            pos += n


def mount(spec):
    """Map the partition and mount it at /rom if it holds a ROMFS (as the port does; silently skipped
    otherwise). Returns True when mounted (vboot then puts /rom and /rom/lib on sys.path)."""
    path, size = spec.split()
    size = int(size)
    addr, room = _reserved()
    if room < size:
        raise OSError("reserved %d bytes for a ROMFS partition of %d" % (room, size))
    try:
        src = open(path, "rb")
    except OSError:
        src = None  # never written: erased
    try:
        _fill(addr, src, size)
    finally:
        if src is not None:
            src.close()
    import vvfs

    vvfs.segment = uctypes.bytearray_at(addr, size)
    sys.modules["vfs"] = vvfs  # vfs with rom_ioctl, as on a ROMFS build
    try:
        vvfs.mount(vvfs.VfsRom(vvfs.segment), "/rom")
    except OSError:
        return False  # no ROMFS in it (erased, or a torn write): the port skips the mount
    return True
