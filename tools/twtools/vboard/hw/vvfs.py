# `vfs` of the virtual board's device process: the unix port's vfs (VfsRom, mount, ...) plus
# rom_ioctl, which a ROMFS build of the ESP32 port has and this unix port lacks. Installed by vmap as
# sys.modules["vfs"]. rom_ioctl(1) is the number of ROM segments, rom_ioctl(2, 0) the mapped "romfs"
# partition (a buffer: memoryview() of it, slices of it, VfsRom of it). On the chip rom_ioctl(2, 0) is
# the esp32.Partition of "romfs", a buffer too; write it through esp32.Partition("romfs") on both
# (readblocks/writeblocks/ioctl). The write ioctls (3, 4, 5) are not implemented by the ESP32 port
# either: -EINVAL.
# The rest of vfs is asked for by name (a module __getattr__: a smaller dict than a copy of its names).
import vfs

segment = None  # set by vmap: the mapping of the "romfs" partition


def __getattr__(name):
    return getattr(vfs, name)


def rom_ioctl(op, *args):
    if op == 1:
        return 0 if segment is None else 1
    if op == 2 and segment is not None and args and args[0] == 0:
        return segment
    return -22  # -EINVAL
