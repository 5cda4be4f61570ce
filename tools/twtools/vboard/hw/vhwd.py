# The virtual board's hardware process: what is C, ROM and silicon on an ESP32 - the machine, network
# and esp32 modules, flash, NVS and the second-stage bootloader - runs here, in its own MicroPython
# process with a heap of its own, so that it costs the device's heap nothing, as on the chip. The
# runner starts one for every boot, just before the device process (vboot.py), and connects the two
# with a pair of pipes (VBOARD_RPC="<read fd> <write fd>").
#
# At power-up it arms the power-cut harness if asked (vcut), runs the bootloader's OTA rule and maps the
# booted image's frozen app (vimage), and tells the device in a handshake. Then it serves the device's
# hardware calls (vproxy.py) one at a time until the device is gone (end of the request pipe: reset,
# power cut, crash), and exits.
#
# Messages (both ways): 6 ASCII digits with the length in bytes of a JSON text (UTF-8), the JSON text,
# then raw bytes.
#   request   [h, "name"]           attribute `name` of object h (a method: {"len": 0})
#             [h, "name", args, kwargs]  call method `name` of object h (the device keeps no handle of
#                                   a method: it asks for it by name at each call, args as below)
#             [h, args, kwargs]     call object h; a buffer argument is {"bytes": i, "len": n} or
#                                   {"bytearray": i, "len": n} (bytearray, memoryview: the call may fill
#                                   it), its n raw bytes follow the JSON text in the order of i; a proxy
#                                   argument is {"id": handle}
#   posted    "!" (33), then little-endian op (u8), partition handle (u32), block (i32), offset (i32),
#             n (u32), then n raw bytes: a flash call of the device's partition proxy (vproxy F) that
#             gets no answer (the device does not wait): op 0 writeblocks(block, bytes, offset), 1
#             writeblocks(block, bytes) (whole blocks: erased first), 2 ioctl(6, block) (erase). Each is
#             still one durable write of its own (vcut). If one fails, the posted calls after it are
#             skipped and the next request is answered with its error instead of being done.
#   answer    [error, value, changed]
#             error: None, or the exception's class name (value: its args); changed: the i of the
#             buffer arguments the call changed (get_blob, readblocks), whose new bytes follow the bytes
#             of value
#   values    None, bool, int, float, str; a JSON list is a tuple, {"list": [...]} a list, {"bytes": n}
#             n bytes (raw, after the JSON text, in the order they appear); {"id": handle} is any other
#             object, kept here under that handle; {"id": handle, "list": [size, block size, flash
#             file]} an esp32.Partition
# (the keys are names the device's MicroPython knows already: they cost it no new qstrs)
#   handshake an answer, unasked: (frozen app directory or None, the cut point or None, machine,
#             network, esp32)
# Keyword arguments are plain values (the app passes none of another kind).
import json
import os
import struct
import sys

sys.path.insert(0, os.getenv("VBOARD_HW"))  # the compiled simulation (the script's own folder is source)
import vflash  # noqa: E402

import vesp32  # noqa: E402
import vmachine  # noqa: E402
import vnetwork  # noqa: E402

_armed = False
if os.getenv("VBOARD_CUT") or os.getenv("VBOARD_TRACE"):  # the power-cut harness only
    import vcut

    _armed = vcut.arm()  # before the bootloader: its otadata writes are durable writes too

# the bootloader checks an OTA app's image before booting it, and so does esp32.Partition.set_boot
vflash.image_check = vflash.vimage_check
vflash.keep = {}  # each flash file opened once per boot
vesp32.images = True
if os.getenv("VBOARD_SOFT"):  # a soft reset (Ctrl-D in the REPL): no bootloader, the same app runs
    import vstate

    # MicroPython's own line for it, written here, before the device process starts: it costs the
    # device's heap nothing
    print("MPY: soft reboot\r")

    _label = vstate.read_text("running").strip() or None
else:
    _label = vflash.bootloader()
_frozen = None
if _label and _label.startswith("ota_"):
    import vimage

    _frozen = vimage.load(_label)  # the booted image's frozen app: the ROM maps it as code

_fds = os.getenv("VBOARD_RPC").split()
_in = open("/proc/self/fd/" + _fds[0], "rb")
_out = open("/proc/self/fd/" + _fds[1], "wb")
_objs = []
_ids = {}  # id -> handle: one handle per object (WLAN(STA_IF) is one object)


def _handle(o):
    h = _ids.get(id(o))
    if h is None:
        h = _ids[id(o)] = len(_objs)
        _objs.append(o)  # kept for the whole boot: the ids of kept objects stay unique
    return h


def _enc(v, segs):
    if v is _METHOD:
        return {"len": 0}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (bytes, bytearray)):
        segs.append(v)
        return {"bytes": len(v)}
    if isinstance(v, tuple):
        return [_enc(x, segs) for x in v]
    if isinstance(v, list):
        return {"list": [_enc(x, segs) for x in v]}
    if isinstance(v, vflash.Partition):  # the device's proxy posts its writes, reads its file (vproxy F)
        return {"id": _handle(v), "list": [v.info()[3], v.block_size, v.path()]}
    return {"id": _handle(v)}


def _read(n):
    b = _in.read(n)
    if len(b) < n:
        raise EOFError
    return b


def _answer(err, value, changed=()):
    segs = []
    j = json.dumps([err, _enc(value, segs), [i for i, _ in changed]]).encode()
    # head: the JSON's length, then the length of all the raw bytes after it (the device skips an
    # answer it could not take in whole: vproxy stays in step)
    rest = sum(len(b) for b in segs) + sum(len(b) for _, b in changed)
    _out.write(b"%6d%8d" % (len(j), rest) + j)
    for b in segs:
        _out.write(b)
    for _, b in changed:
        _out.write(b)


def _dec(a, bufs):
    if isinstance(a, dict):
        return _objs[a["id"]] if "id" in a else bufs[id(a)]
    return a


_METHOD = object()  # answer of a getattr that found a method
_CALLS = (type(_read), type(_in.read))  # function, bound method
_late = None  # (error name, args) of a posted call that failed: the answer to the next request


def _posted(head):
    global _late
    op, h, b, o, n = struct.unpack("<BIiiI", head[1:] + _read(12))
    d = _read(n) if n else None
    if _late is not None:
        return  # after a failed one: skipped
    try:
        p = _objs[h]
        if op == 2:
            p.ioctl(6, b)
        else:
            p.writeblocks(b, d, o if op == 0 else None)
    except Exception as e:  # noqa: BLE001 - raised by the device's next call that waits
        _late = (type(e).__name__, e.args)


def _serve(req):
    """Do request `req` (its buffer arguments read from the pipe first, whatever happens): (value,
    changed buffers); (None, None) when it was not done (a posted call failed before it)."""
    if len(req) == 2:
        if _late is not None:
            return None, None
        v = getattr(_objs[req[0]], req[1])
        return (_METHOD if type(v) in _CALLS else v), ()
    args, kw = req[-2:]
    bufs = {}
    mut = []
    holes = [a for a in args if isinstance(a, dict) and "len" in a]
    for a in sorted(holes, key=lambda a: a.get("bytes", a.get("bytearray"))):  # the device's order
        if "bytearray" in a:
            bufs[id(a)] = bytearray(_read(a["len"]))
            mut.append((a["bytearray"], bufs[id(a)], bytes(bufs[id(a)])))
        else:
            bufs[id(a)] = _read(a["len"])
    if _late is not None:
        return None, None
    f = getattr(_objs[req[0]], req[1]) if len(req) == 4 else _objs[req[0]]  # a method by name, or h
    value = f(*[_dec(a, bufs) for a in args], **kw)
    return value, [(i, b) for i, b, old in mut if b != old]


def main():
    global _late
    _answer(None, (_frozen, vcut.point if _armed else None, vmachine, vnetwork, vesp32))
    while True:
        try:
            head = _in.read(6)
            if len(head) < 6:
                return  # the device is gone: reset, power cut or crash
            if head[0] == 33:
                _posted(head)
                continue
            req = json.loads(_read(int(head)))
            try:
                value, changed = _serve(req)
            except EOFError:
                raise
            except Exception as e:  # noqa: BLE001 - the device's call raises it, as the C module would
                _answer(type(e).__name__, e.args)
                continue
            except SystemExit as e:  # machine.reset(), mark_app_invalid_rollback_and_reboot()
                _answer("SystemExit", e.args)
                continue
            if changed is None:  # a posted call failed: this request was not done, it says why
                _answer(*_late)
                _late = None
                continue
            _answer(None, value, changed)
        except (EOFError, OSError):
            return  # the device died while asking or before the answer (power cut)


main()
