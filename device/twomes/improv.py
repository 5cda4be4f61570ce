# Improv Wi-Fi over serial (version 1): browser tools (ESP Web Tools, Home Assistant) hand the device its
# Wi-Fi credentials over the USB console. feed() is the pure protocol core (bytes in, reply frames out);
# run() reads the console, answers, and runs the slow part (testing the credentials) through the app's
# controller. Frames are found with a byte-wise matcher into one preallocated buffer, so normal text,
# garbage and frames split across reads all work.
import asyncio

from micropython import const

from twomes import wifi
from twomes.log import log

_MAGIC = b"IMPROV"
_VERSION = const(1)
_FRAME_MAX = const(6 + 3 + 255 + 1)
# packet types (module-private consts: compiled in, no heap)
_T_STATE = const(0x01)
_T_ERROR = const(0x02)
_T_RPC = const(0x03)
_T_RESULT = const(0x04)
# states
_READY = const(0x02)
_PROVISIONING = const(0x03)
_PROVISIONED = const(0x04)
# errors
_E_NONE = const(0x00)
_E_INVALID = const(0x01)
_E_UNKNOWN_RPC = const(0x02)
_E_CONNECT = const(0x03)
_E_UNKNOWN = const(0xFF)
# RPC commands
_C_WIFI = const(0x01)
_C_STATE = const(0x02)
_C_INFO = const(0x03)
_C_SCAN = const(0x04)
_STALE_MS = const(1000)  # silence after which a partial frame is dropped


def frame(ptype, data):
    """One complete frame (without the trailing newline)."""
    f = bytearray(_MAGIC)
    f.append(_VERSION)
    f.append(ptype)
    f.append(len(data))
    f.extend(data)
    f.append(sum(f) & 0xFF)
    return bytes(f)


def result(cmd, strings):
    """RPC result frame: each string as length + UTF-8 bytes."""
    body = bytearray()
    for s in strings:
        b = s.encode() if isinstance(s, str) else bytes(s)
        body.append(len(b))
        body.extend(b)
    return frame(_T_RESULT, bytes([cmd, len(body)]) + body)


class Improv:
    def __init__(self, board, ident, ctl, version):
        self.board = board
        self.interrupted = False
        self.ident = ident
        self.ctl = ctl
        self.version = version
        self.state = _READY
        self.urls = []  # redirect URL(s) reported once provisioned (none: the device has no local page)
        self.pending = None  # (ssid, password) received, not yet tried
        self._buf = bytearray(_FRAME_MAX)
        self._n = 0  # bytes of the current frame matched so far
        self._need = 0  # full length of the current frame once its length byte is in

    # ---- the protocol core ------------------------------------------------------------------------
    def feed(self, data):
        """Bytes from the console -> list of reply frames. A Wi-Fi settings command is left in
        self.pending for provision() (the caller runs it; feed never waits)."""
        out = []
        buf = self._buf
        for c in data:
            n = self._n
            if n < 6:
                if c == _MAGIC[n]:
                    buf[n] = c
                    self._n = n + 1
                else:
                    self._n = 1 if c == 73 else 0  # 'I' may start the next magic
                    buf[0] = 73
                continue
            buf[n] = c
            n += 1
            self._n = n
            if n == 7 and c != _VERSION:
                self._n = 0  # another protocol version: ignore the frame
            elif n == 9:
                self._need = 9 + c + 1
            elif n > 9 and n == self._need:
                self._n = 0
                self._frame(memoryview(buf)[:n], out)
        return out

    def _frame(self, f, out):
        n = len(f)
        data = f[9 : n - 1]
        err = None
        if (
            sum(f[: n - 1]) & 0xFF != f[n - 1]
            or f[7] == _T_RPC
            and (len(data) < 2 or data[1] != len(data) - 2)
        ):
            err = _E_INVALID
        elif f[7] != _T_RPC:
            return  # device -> client types are not for us
        elif data[0] == _C_WIFI:
            p = data[2:]
            try:
                ls = p[0]
                lp = p[1 + ls]
                if 2 + ls + lp != len(p):
                    raise ValueError("lengths")
                creds = (bytes(p[1 : 1 + ls]).decode(), bytes(p[2 + ls :]).decode())
            except (IndexError, ValueError):
                err = _E_INVALID
            else:
                if self.state != _PROVISIONING:  # one attempt at a time
                    self.pending = creds
                    self.state = _PROVISIONING
                    out.append(frame(_T_ERROR, bytes([_E_NONE])))
                out.append(frame(_T_STATE, bytes([_PROVISIONING])))
        elif data[0] == _C_STATE:
            out.append(frame(_T_STATE, bytes([self.state])))
            if self.state == _PROVISIONED:
                out.append(result(_C_STATE, self.urls))
        elif data[0] == _C_INFO:
            out.append(result(_C_INFO, ("twomes", self.version, "ESP32", self.ident.name)))
        elif data[0] == _C_SCAN:
            for ssid, rssi, secured in self.ctl.nets:
                out.append(result(_C_SCAN, (ssid, str(rssi), "YES" if secured else "NO")))
            out.append(result(_C_SCAN, ()))
        else:
            err = _E_UNKNOWN_RPC
        if err is not None:
            out.append(frame(_T_ERROR, bytes([err])))

    async def provision(self):
        """Try the pending credentials through the controller; returns the reply frames. The
        controller checks them (the credential rule) and refuses bad ones with a ValueError."""
        ssid, password = self.pending
        self.pending = None
        bad = code = None
        log("improv", "testing network %r (password: stored)" % ssid)
        try:
            code = await self.ctl.submit(ssid, password)
        except ValueError as e:
            bad = str(e)
        except Exception as e:  # noqa: BLE001 - task boundary: report, keep listening
            log("improv", "submit failed: %r" % e)
        password = None
        if code == wifi.JOINED:
            self.state = _PROVISIONED
            log("improv", "joined %r" % ssid)
            return [frame(_T_STATE, bytes([_PROVISIONED])), result(_C_WIFI, self.urls)]
        self.state = _READY
        log("improv", "could not join %r: %s" % (ssid, bad or wifi.REASONS.get(code, "error")))
        return [frame(_T_ERROR, bytes([_E_CONNECT])), frame(_T_STATE, bytes([_READY]))]

    # ---- the console loop -------------------------------------------------------------------------
    async def run(self, reader=None):
        """Listen on the console until cancelled. `reader` (anything with `async read(n)`) replaces
        the console stream in tests; by default board.console_in() is wrapped in asyncio.StreamReader."""
        board = self.board
        board.kbd_intr(-1)  # 0x03 is data here, not Ctrl-C
        job = None
        try:
            if reader is None:
                reader = asyncio.StreamReader(board.console_in())
            last = board.ticks_ms()
            while True:
                # one byte per read: console streams block until `n` bytes are there. No timeout
                # around it (asyncio.wait_for makes a task and a closure per call, per byte here):
                # a frame's staleness is judged when its next byte comes
                data = await reader.read(1)
                now = board.ticks_ms()
                if self._n and board.ticks_diff(now, last) >= _STALE_MS:
                    self._n = 0  # a frame left incomplete this long is dropped (its length byte lied)
                last = now
                if not data:
                    return  # console closed (host tests)
                if data == b"\x03" and self._n == 0:
                    # Ctrl-C outside a frame: a person or mpremote wants the REPL (the app stops)
                    self.interrupted = True
                    return
                for f in self.feed(data):
                    board.console_write(f + b"\n")
                if self.pending is not None:
                    job = asyncio.create_task(self._job())
        finally:
            if job is not None:
                job.cancel()
            board.kbd_intr(3)

    async def _job(self):
        try:
            frames = await self.provision()
        except Exception as e:  # noqa: BLE001 - task boundary: report, keep listening
            log("improv", "provisioning error: %r" % e)
            self.state = _READY
            frames = (frame(_T_ERROR, bytes([_E_UNKNOWN])), frame(_T_STATE, bytes([_READY])))
        for f in frames:
            self.board.console_write(f + b"\n")
