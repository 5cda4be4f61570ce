# The virtual board's ROMFS mapping: what the ESP32's flash MMU and MicroPython's start-up do for a
# ROMFS build (ports/esp32 esp32_partition.c, extmod/vfs.c mp_vfs_mount_romfs_protected). Loaded by
# vboot in the device process before boot.py, and dropped again.
#
# On the chip the partition labelled "romfs" is memory-mapped flash: VfsRom reads it in place and the
# bytecode and constants of the .mpy files in it run from there, outside the MicroPython heap. Here the
# same must hold, so the partition is copied once per boot into memory of this process that is not the
# GC heap: the runner reserves it in the process's environment (VBOARD_ROMMAP0..n, filler bytes, the
# last entries of the environment block); this module finds it (/proc/self/stat: env_start;
# /proc/self/environ), takes those entries out of the environment (libc forgets the pointers, the bytes
# stay where they are and nothing reads them any more), writes the partition's bytes over them through
# /proc/self/mem and wraps them with uctypes.bytearray_at - a buffer whose bytes are not in the heap.
# The mapping is the partition as it was at power-up (the chip's mapping would follow later writes; the
# app never reads a slot through the mapping in the boot that writes it).
#
# VBOARD_ROM = "<partition size> <number of VBOARD_ROMMAP strings> <flash file of the partition>".
#
# On the chip all of this is C and costs the heap nothing but the VfsRom object and its mount entry.
# Here what the app's heap keeps is that, the mapping's small bytearray object, vvfs, and the qstrs of
# this module: every global name and string literal of a module is interned for good, so this is one
# function with few names and short literals (measured: docs/heap.md).
import sys


def mount(spec):
    """Map the partition and mount it at /rom if it holds a ROMFS (as the port does; silently skipped
    otherwise). Returns what the port then adds to sys.path (vboot puts it there), or None."""
    size, pieces, path = spec.split(" ", 2)
    size = int(size)
    # the reserved bytes: from the first VBOARD_ROMMAP value to the end of the environment block (those
    # entries come last; consecutive strings are consecutive in memory); read in pieces, as the block
    # is larger than the heap
    with open("/proc/self/stat") as f:
        s = f.read()
    s = s[s.rfind(")") + 2 :].split()
    env, end = int(s[47]), int(s[48])  # fields 50 and 51 of proc(5): env_start, env_end
    key = b"VBOARD_ROMMAP0="
    buf = bytearray(2048)
    with open("/proc/self/environ", "rb") as f:
        pos = 0
        tail = b""
        while True:
            n = f.readinto(buf)
            if not n:
                raise OSError("VBOARD_ROMMAP")
            s = tail + buf[:n]
            i = s.find(key)
            if i >= 0:
                addr = env + pos - len(tail) + i + len(key)
                break
            pos += n
            tail = s[-len(key) :]
    s = tail = None
    if end - 1 - addr < size:  # the block's last NUL stays
        raise OSError("VBOARD_ROMMAP")
    # the process's environment no longer lists them (libc drops the pointers, the bytes stay): a
    # program it starts (os.system, as a power cut does) must not get the image as its environment
    import os

    for i in range(int(pieces)):
        os.unsetenv("VBOARD_ROMMAP" + str(i))
    try:
        src = open(path, "rb")
    except OSError:
        src = None  # never written: erased flash
        for i in range(len(buf)):
            buf[i] = 0xFF
    with open("/proc/self/mem", "r+b") as f:
        f.seek(addr)
        pos = 0
        while pos < size:
            n = min(len(buf), size - pos)
            if src is not None and src.readinto(buf) < n:
                raise OSError(path)
            f.write(buf if n == len(buf) else memoryview(buf)[:n])
            pos += n
    if src is not None:
        src.close()
    buf = None
    import uctypes
    import vvfs

    vvfs.segment = uctypes.bytearray_at(addr, size)
    sys.modules["vfs"] = sys.modules.pop("vvfs")  # vfs with rom_ioctl, as on a ROMFS build
    try:
        vvfs.mount(vvfs.VfsRom(vvfs.segment), "/rom")
    except OSError:
        return None  # no ROMFS in it (erased, or a torn write): the port skips the mount
    return ["/rom", "/rom/lib"]
