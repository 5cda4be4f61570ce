# Improv Wi-Fi over the serial console: the framing (magic "IMPROV", version, type, length, data,
# checksum) and the console loop. Browser tools (ESP Web Tools, Home Assistant) hand the device its
# Wi-Fi credentials this way. The RPC itself is twomes.ap.improv.
#
# Ctrl-C: the console's 0x03 is data while this runs (kbd_intr(-1)). Once a magic is matched every byte
# up to the frame's end belongs to the frame, whatever its version, type or checksum (a frame of another
# version is skipped by its length byte; a magic repeated where the version belongs starts the frame
# again), so no byte of a frame is ever taken for Ctrl-C. Only a lone 0x03 stops the app (a person or
# mpremote wants the REPL): outside any frame, no magic partly matched, and not right after a frame with
# a bad checksum (misaligned bytes: until a good frame or _QUIET_MS of silence).
import asyncio

from micropython import const

from twomes import hw
from twomes.ap.improv import E_INVALID, ERROR, Improv
from twomes.log import log

_MAGIC = b"IMPROV"
_VERSION = const(1)
_T_RPC = const(0x03)
_FRAME_MAX = const(6 + 3 + 255 + 1)
_STALE_MS = const(1000)  # silence after which a partial frame is dropped (its length byte lied)
_QUIET_MS = const(100)  # silence that ends the "noisy" state after a broken frame
_BACK_MS = const(5000)  # console(): silence after which it hands the console back (Improv unloaded)
_READY = const(0x02)  # improv's state "ready" (its consts are private to it)


def frame(ptype, data):
    """One complete frame (without the trailing newline)."""
    f = bytearray(_MAGIC)
    f.append(_VERSION)
    f.append(ptype)
    f.append(len(data))
    f.extend(data)
    f.append(sum(f) & 0xFF)
    return bytes(f)


class Serial:
    """The framing: bytes in (feed), reply frames out through `write(frame + b"\\n")`."""

    def __init__(self, ctl, ident, version, write):
        self.write = write
        self.improv = Improv(ctl, ident, version, self._send)
        self.pending = None  # (ssid, password) received, for the console loop to provision
        self.interrupted = False  # a lone Ctrl-C came
        self.frames = 0  # complete frames seen (any version), for the log and the tests
        self._buf = bytearray(_FRAME_MAX)
        self._n = 0  # bytes of the current frame so far (0: outside a frame)
        self._need = 0  # its full length once its length byte is in
        self._foreign = 0  # inside a frame of another version: 7 type next, 8 length next, 9 its data
        self._skip = 0  # bytes of that frame still to come
        self._noisy = False  # a frame with a bad checksum came last: a 0x03 now is not a person's Ctrl-C
        self.last = 0  # ticks of the last byte (console(); None: its silence's watch asks it to hand back)

    def _send(self, kind, data):
        self.write(frame(kind, data) + b"\n")

    def idle(self):
        """Outside any frame, no magic partly matched."""
        return self._n == 0 and not self._foreign

    def drop(self):
        """Forget a partial frame (silence: its length byte lied)."""
        self._n = self._foreign = 0

    def quiet(self):
        """The console was silent for _QUIET_MS: a 0x03 now is a person's (or a tool's) Ctrl-C."""
        self._noisy = False

    def feed(self, data):
        """Bytes from the console. Reply frames are written as frames complete; a Wi-Fi command leaves
        its credentials in self.pending; a lone 0x03 sets self.interrupted (the rest is not read)."""
        buf = self._buf
        for c in data:
            # a frame of another version (or a magic cut short by a new one) is skipped up to its end
            # by its length byte: none of its bytes is Ctrl-C, but a magic inside it starts a frame
            inside = self._foreign
            if inside:
                if inside == 8:  # its length byte
                    self._skip = c + 1
                    self._foreign = 9
                elif inside == 7:  # its type byte
                    self._foreign = 8
                else:
                    self._skip -= 1
                    if self._skip <= 0:
                        self._foreign = 0
            n = self._n
            if n < 6:
                if c == _MAGIC[n]:
                    buf[n] = c
                    self._n = n + 1
                    if n == 5:  # a frame starts: whatever was skipped ends here
                        self._foreign = 0
                elif n == 0 and c == 3 and not inside and not self._noisy:
                    self.interrupted = True
                    return
                else:
                    self._n = 1 if c == 73 else 0  # 'I' may start the next magic
                    buf[0] = 73
                continue
            if n == 6 and c != _VERSION:
                self._foreign = 7
                self._n = 1 if c == 73 else 0  # "IMPROVI...": the magic may come again
                continue
            buf[n] = c
            n += 1
            self._n = n
            if n == 9:
                self._need = 9 + c + 1
            elif n > 9 and n == self._need:
                self._n = 0
                self.frames += 1
                self._frame(memoryview(buf)[:n])

    def _frame(self, f):
        n = len(f)
        self._noisy = sum(f[: n - 1]) & 0xFF != f[n - 1]
        if self._noisy:
            self._send(ERROR, bytes([E_INVALID]))
        elif f[7] == _T_RPC:  # device -> client types are not for us
            creds = self.improv.rpc(f[9 : n - 1])
            if creds is not None:
                self.pending = creds


async def console(board, ctl, ident, version, reader=None, first=None, sleep=None, _noisy=False):
    """Listen for Improv on the serial console until cancelled, the console closes (host tests) or a
    lone Ctrl-C comes (then ctl.interrupted is set): False, Ctrl-C back on (not after a failure: the
    supervisor starts the listener again, and 0x03 stays data until then). With `sleep` (the silence's
    clock, asyncio.sleep): True after _BACK_MS of silence with nothing under way (Improv "ready"; a
    provisioning's end starts the silence again), the console handed back as it is (0x03 still data)
    for its caller to unload this. `reader` (anything with `async read(n)`) replaces the console
    stream in tests; `first`: bytes already read from it (the controller's console, which loads this
    module when the start of a frame comes); `_noisy`: bytes before `first` may have been lost (a 0x03
    is Ctrl-C only after a silence). Run by the setup controller's console task."""
    board.kbd_intr(-1)  # 0x03 is data here, not Ctrl-C
    job = watch = None
    quiet = False
    ser = Serial(ctl, ident, version, board.console_write)
    ser._noisy = _noisy
    if first:
        ser.feed(first)
    try:
        if reader is None:
            reader = asyncio.StreamReader(board.console_in())
        ser.last = board.ticks_ms()
        if sleep:  # one watch for the whole time (no time limit per read: nothing allocated per byte)
            me = asyncio.current_task()
            watch = asyncio.create_task(_silence(board, ser, me, sleep))
        while True:
            # one byte per read: console streams block until `n` bytes are there. A frame's staleness
            # is judged when its next byte comes (no timer per frame), by how long the line was silent:
            # the read's own wait (a stall of the loop before it does not count: the bytes waited in the
            # console's buffer meanwhile)
            t = board.ticks_ms()
            try:
                data = await reader.read(1)
            except MemoryError:  # no heap for this read just now: again in a moment, in step
                await hw.sleep_ms(10)
                continue
            now = board.ticks_ms()
            gap = board.ticks_diff(now, t)
            if gap >= _QUIET_MS:
                ser.quiet()
                if gap >= _STALE_MS and not ser.idle():
                    ser.drop()
            ser.last = now
            if not data:
                return False  # console closed (host tests)
            try:
                ser.feed(data)
            except MemoryError:  # no heap for a reply: that reply is lost, the framing stays in step
                pass
            if ser.interrupted:
                ctl.interrupted = True
                return False
            if ser.pending is not None and (job is None or job.done()):
                ssid, password = ser.pending
                ser.pending = None
                job = asyncio.create_task(ser.improv.provision(ssid, password))
                password = None
    except asyncio.CancelledError:
        if ser.last is not None:
            raise
        hw.uncancel(me)  # (the watch's cancellation, wherever it met the loop: the silence, not the end)
        quiet = True
        return True
    except Exception:
        quiet = True  # a failure: the supervisor starts the listener again, 0x03 stays data until then
        raise
    finally:
        if watch is not None:
            watch.cancel()
        if job is not None:
            job.cancel()
        if not quiet:
            board.kbd_intr(3)
            log("improv", "console listener ended")


async def _silence(board, ser, task, sleep):
    """Cancel `task` (the console's, reading) with ser.last None once the console was silent for
    _BACK_MS with Improv "ready" (while it is not, a provisioning running or done, the silence starts
    again)."""
    while True:
        now = board.ticks_ms()
        if ser.improv.state != _READY:
            ser.last = now
        left = _BACK_MS - board.ticks_diff(now, ser.last)
        if left <= 0:
            ser.last = None
            task.cancel()
            return
        await sleep(left / 1000)
