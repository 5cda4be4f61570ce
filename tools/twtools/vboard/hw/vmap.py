# The virtual board's memory maps, made at power-up before anything else runs in the device process
# (vboot.py imports this module, which does its work at import and forgets itself): what the ESP32's
# flash MMU and MicroPython's start-up give a ROMFS build (ports/esp32 esp32_partition.c,
# extmod/vfs.c mp_vfs_mount_romfs_protected), for two pieces of flash:
#
# - "VBOARD_FW": the simulation's own device-side code (vfw.py, vproxy.py, vpart.py, vvfs.py, vos.py,
#   vrepl.py compiled to .mpy in a ROMFS image, runner.firmware_rom()). On the chip machine, network,
#   esp32 and the start-up are C in the firmware's flash and cost the MicroPython heap nothing: here
#   their bytecode, constants and the text of their names run in place from this mapping, as the app's
#   do from /rom. It is mounted at /.fw only while vfw imports them (vfw.main unmounts it before
#   boot.py): the app never sees it.
# - "VBOARD_ROM" (the shipping mode only): the board's "romfs" partition, mounted at /rom as the port
#   does; vfs becomes vvfs (rom_ioctl). The mapping is the partition as it was at power-up (the chip's
#   mapping would follow later writes; the app never reads a slot through the mapping in the boot that
#   writes it).
#
# How memory outside the GC heap is had on the unix port (no ffi, no mmap, no ROM segment): the runner
# starts this process with filler strings <NAME>MAP0..n as the last entries of its environment, as long
# as the piece of flash; the kernel puts them one after the other at the top of the stack mapping. This
# module finds them (/proc/self/stat: env_start; /proc/self/environ, read in pieces: the block is larger
# than the heap), takes them out of the environment (libc forgets the pointers, the bytes stay, and a
# program the device starts - a power cut is `kill -9` run by os.system - does not get them), writes
# the flash file's bytes over them through /proc/self/mem and wraps them with uctypes.bytearray_at: a
# small bytearray object whose bytes are not in the heap.
#
# <NAME> = "<size> <number of filler strings> <flash file>". This module's code is in the heap only
# while it runs; its names stay interned (every name of a module does), so it has few (docs/heap.md).
import os
import sys

import uctypes
import vfs


def mapped(name):
    """The piece of flash `name` describes, copied into its reserved memory: a bytearray outside the heap."""
    size, n, path = os.getenv(name).split(" ", 2)
    size = int(size)
    with open("/proc/self/stat") as f:
        s = f.read()
    s = s[s.rfind(")") + 2 :].split()
    env, end = int(s[47]), int(s[48])  # fields 50 and 51 of proc(5): env_start, env_end
    key = (name + "MAP0=").encode()
    buf = bytearray(2048)
    with open("/proc/self/environ", "rb") as f:
        pos = 0
        tail = b""
        while True:
            r = f.readinto(buf)
            if not r:
                raise OSError(name)
            s = tail + buf[:r]
            i = s.find(key)
            if i >= 0:
                addr = env + pos - len(tail) + i + len(key)
                break
            pos += r
            tail = s[-len(key) :]
    s = tail = None
    if end - 1 - addr < size:  # the block's last NUL stays
        raise OSError(name)
    for i in range(int(n)):
        os.unsetenv(name + "MAP" + str(i))
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
            r = min(len(buf), size - pos)
            if src is not None and src.readinto(buf) < r:
                raise OSError(path)
            f.write(buf if r == len(buf) else memoryview(buf)[:r])
            pos += r
    if src is not None:
        src.close()
    return uctypes.bytearray_at(addr, size)


fw = mapped("VBOARD_FW")
vfs.mount(vfs.VfsRom(fw), "/.fw")
sys.path[:] = ["/.fw"]
import vfw  # noqa: E402 - from the firmware's ROM

vfw.fw = fw
if os.getenv("VBOARD_ROM"):
    import vvfs  # noqa: E402

    vvfs.segment = mapped("VBOARD_ROM")
    sys.modules["vfs"] = sys.modules.pop("vvfs")  # vfs with rom_ioctl, as on a ROMFS build
    try:
        vfs.mount(vfs.VfsRom(vvfs.segment), "/rom")
        vfw.rom = 1
    except OSError:
        pass  # no ROMFS in it (erased, or a torn write): the port skips the mount
del sys.modules["vmap"]
