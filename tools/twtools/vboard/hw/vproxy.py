# The device's side of the virtual board's hardware. vfw installs proxies as machine, network and
# esp32: every attribute and call is answered by the hardware process (vhwd.py: the simulation, and
# the protocol) while the device waits, as a call into C does on the chip. Tiny on purpose: on an ESP32
# those modules cost the MicroPython heap nothing (here their code runs in place from the firmware's
# ROM, vmap.py). Importing it connects to the hardware process.
import json
import os
import sys

import vfw

_r = open("/proc/self/fd/" + os.getenv("VBOARD_RPC").split()[0], "rb")  # answers
_w = open("/proc/self/fd/" + os.getenv("VBOARD_RPC").split()[1], "wb")  # requests


# An answer is read in step with the hardware process whatever the app does meanwhile: its head (read
# into _hb, no allocation) gives the length of everything after it; if taking it in fails (a MemoryError
# while the JSON or a bytes value is made, Ctrl-C), the rest is read into _sb and dropped before the
# error goes on, so the next call reads its own answer.
_hb = bytearray(14)  # head: JSON length (6 digits), then the raw bytes' length (8)
_sb = bytearray(64)
_s1 = bytearray(1)
_n = 0  # bytes of the current answer not read yet


def _gone():
    # the hardware process is gone: the power was cut (vcut), this side goes too
    os.system("kill -9 $PPID")  # at once, SIGKILL: no finally, no flush (the port has no os.kill)
    while 1:
        pass


def _x(n):
    global _n
    b = _r.read(n)
    if len(b) < n:
        _gone()
    _n -= n
    return b


def _fill(buf):
    global _n
    if _r.readinto(buf) < len(buf):
        _gone()
    _n -= len(buf)


def _num(a, b):
    v = 0
    for i in range(a, b):
        c = _hb[i]
        if c != 32:
            v = v * 10 + c - 48
    return v


def _skip():
    while _n >= 64:
        _fill(_sb)
    while _n > 0:
        _fill(_s1)


def _d(v):
    # a value of the answer; its bytes follow the JSON text, in this order
    t = type(v)
    if t is dict:
        if "id" in v:
            t = H()
            if "list" in v:  # an esp32.Partition: its proxy's code is loaded when first needed
                t = (sys.modules.get("vpart") or vfw.load("vpart")).F(H, _q, _w, _gone, v["list"])
            t._h = v["id"]
            return t
        if "bytes" in v:
            return _x(v["bytes"])
        if "len" in v:
            return H  # a method (H.__getattr__)
        v = v["list"]
    elif t is not list:
        return v
    for i in range(len(v)):
        v[i] = _d(v[i])
    return v if t is dict else tuple(v)


def _q(m, b=()):
    # send request m with buffer arguments b (none: read the handshake), return the answer's value
    global _n
    if m:
        m = json.dumps(m).encode()  # utf-8: its length in bytes
        try:
            _w.write(b"%6d" % len(m))  # (one write of both costs a copy: no faster, more fragments)
            _w.write(m)
            for i in b:
                _w.write(i)
        except OSError:
            pass  # gone: reading the answer says so
    _n = 14
    _fill(_hb)
    j = _num(0, 6)
    _n = j + _num(6, 14)
    try:
        m = json.loads(_x(j))
        v = _d(m[1])
        for i in m[2]:  # buffers the call filled (get_blob, readblocks)
            _fill(b[i])
    except BaseException:
        _skip()
        raise
    if m[0]:
        import builtins

        raise getattr(builtins, m[0], RuntimeError)(*v)
    return v


class H:
    # an object of the hardware process (module, class, instance); _h: its handle. A method is not kept:
    # each access makes a small H whose _h is [handle, name] (called by name, then garbage), as each
    # access to a method on the chip makes a bound method. Constants and classes are asked once.
    def __getattr__(s, n):
        v = _q([s._h, n])
        if v is H:  # a method
            v = H()
            v._h = [s._h, n]
            return v
        setattr(s, n, v)
        return v

    def __call__(s, *a, **k):
        b = []  # buffers: raw bytes after the request (keyword arguments are plain values)
        a = list(a)
        for i in range(len(a)):
            x = a[i]
            if isinstance(x, (bytes, bytearray, memoryview)):
                a[i] = {"bytes" if type(x) is bytes else "bytearray": len(b), "len": len(x)}
                b.append(x)
            elif isinstance(x, H):
                a[i] = {"id": x._h}
        h = s._h
        return _q(h + [a, k] if type(h) is list else [h, a, k], b)
