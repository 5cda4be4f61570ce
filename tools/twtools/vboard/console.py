"""A virtual board's serial line, as a USB-UART bridge gives one to the tools on the computer.

Two pty pairs: the tools open the *outer* one (``path``: what `twomes board --pty` prints, what
mpremote, ampy, esptool's port scan and `twomes monitor` open); the board's processes have the *inner*
one as their console (stdin, stdout, stderr). A pump thread copies bytes both ways and does what the
chip's UART driver does with Ctrl-C: while MicroPython has its keyboard interrupt on, a 0x03 from the
tools raises KeyboardInterrupt in the running code instead of being read as data.

How "on" is known without any code in the device's heap: the unix port installs its SIGINT handler
while it runs code with Ctrl-C enabled (a script, a REPL command, ``micropython.kbd_intr(3)``) and
removes it for ``kbd_intr(-1)``; its REPL clears ISIG on the console while it reads a line (raw
terminal mode) and sets it again while the line runs. So a 0x03 becomes SIGINT when the inner line
has ISIG set *and* the device process catches SIGINT (``/proc/PID/status``, ``SigCgt``); otherwise it
is data (Improv frames, the REPL's own Ctrl-C handling).

Output is never held back by a missing reader: a UART with nobody listening loses bytes, it does not
stop the chip. What the tools have not read yet is kept up to ``KEEP`` bytes (the oldest go first).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import termios
import threading
import time
import tty
from collections.abc import Callable

KEEP = 16 * 1024
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.\r\n'
_SIGINT_BIT = 1 << (signal.SIGINT - 1)


class ReplWatch:
    """Which REPL the board's console is in, from what the board prints: the friendly REPL prints its
    banner when it starts (after the app, after Ctrl-B in the raw REPL), the raw REPL its own."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.in_repl = False
        self.raw = False
        self._tail = b""

    def see(self, chunk: bytes) -> None:
        data = self._tail + chunk
        raw_at, friendly_at = data.rfind(RAW_BANNER), data.rfind(FRIENDLY_BANNER)
        if raw_at >= 0 or friendly_at >= 0:
            self.in_repl = True
            self.raw = raw_at > friendly_at
        self._tail = data[-max(len(RAW_BANNER), len(FRIENDLY_BANNER)) :]


def _catches_sigint(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & _SIGINT_BIT)
    except OSError:
        pass
    return False


def _nonblocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


class SerialLine:
    def __init__(self, feed: Callable[[bytes], None]) -> None:
        self._feed = feed
        self._outer, self._outer_slave = os.openpty()
        tty.setraw(self._outer_slave)
        self.path = os.ttyname(self._outer_slave)
        self._inner, self.device_fd = os.openpty()
        self.reset_line()
        for fd in (self._outer, self._inner):
            _nonblocking(fd)
        self._pid: int | None = None
        self._closed = threading.Event()
        self._inject = bytearray()
        self._lock = threading.Lock()
        self.interrupts = 0  # Ctrl-C bytes turned into KeyboardInterrupt (tests read it)
        self._last_interrupt: tuple[int | None, float] = (None, 0.0)
        self._thread = threading.Thread(target=self._pump, daemon=True, name="vboard-serial")
        self._thread.start()

    def reset_line(self) -> None:
        """The board's side of the line as a UART gives it at power-up: 8 bits, no echo, no line
        editing, no newline translation. ISIG is on (the unix port's REPL clears it while it reads a
        line) but no character signals in the kernel: the pump decides, as the UART driver does."""
        tty.setraw(self.device_fd, termios.TCSANOW)  # bytes typed during the reset stay for the board
        attrs = termios.tcgetattr(self.device_fd)
        attrs[3] |= termios.ISIG
        for c in (termios.VINTR, termios.VQUIT, termios.VSUSP):
            attrs[6][c] = b"\x00"  # _POSIX_VDISABLE
        termios.tcsetattr(self.device_fd, termios.TCSANOW, attrs)

    def attach(self, pid: int | None, typed: bytes = b"") -> None:
        """The device process that runs now (None: none); ``typed`` is put on its input first."""
        with self._lock:
            self._pid = pid
            self._inject += typed

    def _interrupts_on(self) -> bool:
        with self._lock:
            pid = self._pid
        if pid is None:
            return False
        try:
            on = bool(termios.tcgetattr(self.device_fd)[3] & termios.ISIG)
        except termios.error:
            return False
        if not on or not _catches_sigint(pid):
            return False
        last_pid, last_time = self._last_interrupt
        if pid == last_pid and time.monotonic() - last_time < 0.2:
            # one KeyboardInterrupt is still on its way: on the chip a second Ctrl-C just stays
            # pending (ampy sends two); the unix port would exit on a second SIGINT
            return True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
            self.interrupts += 1
            self._last_interrupt = (pid, time.monotonic())
        return True

    def _pump(self) -> None:
        to_dev = bytearray()
        to_tools = bytearray()
        while not self._closed.is_set():
            with self._lock:
                if self._inject:
                    to_dev += self._inject
                    self._inject.clear()
            readers = [self._inner] + ([self._outer] if len(to_dev) < 4096 else [])
            writers = ([self._inner] if to_dev else []) + ([self._outer] if to_tools else [])
            try:
                r, w, _ = select.select(readers, writers, [], 0.1)
            except (OSError, ValueError):
                return  # closed
            if self._inner in r:
                data = self._read(self._inner)
                if data:
                    self._feed(data)
                    to_tools += data
                    if len(to_tools) > KEEP:
                        del to_tools[: len(to_tools) - KEEP]
            if self._outer in r:
                for b in self._read(self._outer):
                    if b == 3 and self._interrupts_on():
                        continue  # the line discipline turned it into SIGINT; it is not data
                    to_dev.append(b)
            if self._inner in w:
                del to_dev[: self._write(self._inner, to_dev)]
            if self._outer in w:
                del to_tools[: self._write(self._outer, to_tools)]

    @staticmethod
    def _read(fd: int) -> bytes:
        try:
            return os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:  # EIO: nobody on the other side (between boots); nothing to read
            return b""

    @staticmethod
    def _write(fd: int, data: bytearray) -> int:
        try:
            return os.write(fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return len(data)  # the line is gone: what was on its way is lost, as on a cable

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        for fd in (self._outer, self._outer_slave, self._inner, self.device_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
