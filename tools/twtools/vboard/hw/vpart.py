# The device's proxy of an esp32.Partition, made by vproxy at the first partition the hardware process
# hands over ({"id": handle, "list": [size, block size, flash file]}; an update's business, so the
# app's other boots do not carry this in their heap), from the firmware's ROM (vfw.load): its code runs
# in place there. On the chip a flash write is a C call that returns when the flash is
# programmed; here a write or an erase is posted - sent down the pipe and not waited
# for: the hardware process does them in the order sent, each one still a durable write (a cut point)
# of its own (vcut), and one that fails is raised by the next hardware call that waits. A read takes the
# flash file itself once the hardware has done what was posted. So an image costs no process round trip
# per 1 KB. Ranges are checked here as the hardware checks them (EINVAL): a bad call fails at once.
import struct

C = None  # the class, made once (its base is vproxy's H)
p = 0  # writes posted since a read last waited for the hardware (any partition)


def F(H, q, w, gone, g):
    """A new partition proxy of geometry g (vproxy sets its handle)."""
    global C
    if C is None:
        C = _make(H, q, w, gone)
    t = C()
    t._g = g
    return t


def _make(H, q, w, gone):
    def post(s, op, b, o, d):
        # (vhwd: "!" head) op 0 write at offset o, 1 write whole blocks, 2 erase block b; then d
        global p
        p = 1
        try:
            w.write(struct.pack("<BBIiiI", 33, op, s._h, b, o, len(d)))
            if d:
                w.write(d)
        except OSError:
            gone()

    class P(H):
        def _at(s, b, o, n):
            a = b * s._g[1] + (o or 0)
            if a < 0 or a + n > s._g[0]:
                raise OSError(22, "invalid argument")
            return a

        def writeblocks(s, b, d, o=None):
            s._at(b, o, len(d))
            post(s, 1 if o is None else 0, b, o or 0, d)

        def ioctl(s, c, a=None):
            if c == 4:
                return s._g[0] // s._g[1]
            if c == 5:
                return s._g[1]
            if c == 6:
                s._at(a, 0, s._g[1])
                post(s, 2, a, 0, b"")
                return 0
            return q([s._h, "ioctl", [c, a], {}])

        def readblocks(s, b, d, o=0):
            global p
            a = s._at(b, o, len(d))
            if p:
                p = 0
                q([s._h, "ioctl", [1, 0], {}])  # answered once the posted calls are done (or raises)
            try:
                f = open(s._g[2], "rb")
            except OSError:  # never written: the hardware makes the file
                return q([s._h, "readblocks", [b, {"bytearray": 0, "len": len(d)}, o], {}], (d,))
            try:
                f.seek(a)
                if f.readinto(d) != len(d):
                    raise OSError(5, "flash read failed")
            finally:
                f.close()

    return P
