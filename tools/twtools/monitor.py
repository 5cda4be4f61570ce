"""`twomes monitor`: the board's serial console, with the seed's steps 2 and 3 done for you.

- Opens the port WITHOUT resetting the ESP32 (DTR/RTS inactive before open); ``--reset`` restarts the
  board on purpose (EN pulse) so the boot log, with the activation line, is seen from the start.
- Recognises the activation line ``{"name":...,"device_type":...,"activation_token":...}``, shows it as
  a terminal QR code (for the phone app) and with ``--register`` creates the device on the server.
- Decodes Improv Wi-Fi frames in the stream (``[improv] state: provisioned``) instead of printing bytes.
- Masks anything that looks like a secret (session token, Wi-Fi password, bearer token) in what it
  prints; the activation token is shown because registering the device needs it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from twtools import improv, term
from twtools.adminargs import AdminArgsError, add_admin_options, admin_client, server_problem
from twtools.ports import PortError, open_serial, pick_port

ACTIVATION_KEYS = ("name", "device_type", "activation_token")
PREFIX = "[twomes] "
MASK = "***"
IDLE_FLUSH_S = 0.25  # a line without newline (a prompt) is shown after this much silence
FRAME_WAIT_S = 1.0  # an incomplete Improv frame is given up (shown as text) after this much silence

# ---- secrets --------------------------------------------------------------------------------------

# key = value / "key": "value" for keys that name a secret. `activation_token` and `ap_password` (the
# setup access point's password, meant to be read off the console) are not matched: (?<![\w]) keeps
# `token` from matching inside `activation_token`, and the AP forms are excluded explicitly.
_SECRET_KEYS = (
    r"session[_ ]?token|session|wifi[_ ]?pass(?:word)?|wifi[_ ]?psk|password|passwd|pass|psk|pwd|"
    r"secret|ap_secret|token|authorization"
)
_KV = re.compile(
    r"""(?<![\w])(?<!AP )(?<!ap )(?<!AP-)(?P<key>["']?(?:"""
    + _SECRET_KEYS
    + r""")["']?)(?P<sep>\s*[:=]\s*)(?P<val>"(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;}]+)""",
    re.I,
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{6,}")
# Twomes session/admin tokens: <base64url id>.<base64url random>, e.g. Mw.cHA2... (43 random chars)
_TOKEN = re.compile(
    r"(?<![\w.])[A-Za-z0-9_-]{1,16}\.(?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*[a-z])"
    r"(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}"
)


def mask_secrets(text: str) -> str:
    """``text`` with secret values replaced by ***. Keys stay, so the line still says what it was."""

    def kv(m: re.Match[str]) -> str:
        val = m.group("val")
        if val.lower() in ("bearer", "basic"):  # an auth scheme: the credential after it is masked below
            return m.group(0)
        quote = val[0] if val[:1] in "\"'" else ""
        return f"{m.group('key')}{m.group('sep')}{quote}{MASK}{quote}"

    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _KV.sub(kv, text)
    return _TOKEN.sub(MASK, text)


# ---- the console stream ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    kind: str  # "line" (ended by a newline), "partial" (text without newline yet) or "improv"
    text: str = ""
    frame: improv.Frame | None = None


def printable(s: str) -> str:
    """Control characters other than tab and ESC (colour codes) would garble the terminal: escaped."""
    return "".join(c if c >= " " or c in "\t\x1b" else f"\\x{ord(c):02x}" for c in s)


def _text(raw: bytes | bytearray) -> str:
    return printable(bytes(raw).decode("utf-8", "replace").replace("\r", ""))


class ConsoleDecoder:
    """Splits the console byte stream into lines and Improv frames (frames may contain any byte,
    newlines included, so they are cut by their length field, not by lines)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self._skip = 0  # "IMPROV" before this index turned out to be text
        self._after_frame = False

    def feed(self, data: bytes) -> list[Event]:
        self.buf += data
        events: list[Event] = []
        buf = self.buf
        while buf:
            if self._after_frame:  # the newline a device sends after each frame
                if buf[:2] == b"\r\n":
                    del buf[:2]
                elif buf[:1] == b"\n":
                    del buf[:1]
                if buf[:1] != b"\r":
                    self._after_frame = False
                if not buf:
                    break
            i = buf.find(improv.HEADER, self._skip)
            nl = buf.find(b"\n")
            if nl != -1 and (i == -1 or nl < i):
                events.append(Event("line", _text(buf[:nl])))
                del buf[: nl + 1]
                self._skip = max(0, self._skip - nl - 1)
                continue
            if i == -1:
                break
            frame, end = improv.parse_at(buf, i)
            if end == -1:
                break
            if end == 0:
                self._skip = i + 1
                continue
            if i > 0:
                events.append(Event("partial", _text(buf[:i])))
            events.append(Event("improv", frame=frame))
            del buf[:end]
            self._skip = 0
            self._after_frame = True
        return events

    def flush(self, idle: float) -> list[Event]:
        """After ``idle`` seconds of silence: what is pending is shown as it is (a prompt, or a frame
        that never completed)."""
        if not self.buf or idle < IDLE_FLUSH_S:
            return []
        waiting_frame = self.buf.find(improv.HEADER, self._skip) != -1 or improv.HEADER.startswith(
            bytes(self.buf[-6:]).lstrip(b"\n")
        )
        if waiting_frame and idle < FRAME_WAIT_S:
            return []
        text = _text(self.buf)
        self.buf.clear()
        self._skip = 0
        return [Event("partial", text)] if text else []


def find_activation(line: str) -> dict[str, str] | None:
    """The activation object in a console line, if the line carries one."""
    start = line.find("{")
    if start == -1 or '"activation_token"' not in line:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(line, start)
    except ValueError:
        return None
    if isinstance(obj, dict) and all(isinstance(obj.get(k), str) for k in ACTIVATION_KEYS):
        return {k: obj[k] for k in ACTIVATION_KEYS}
    return None


def activation_text(payload: dict[str, str]) -> str:
    """The activation JSON exactly as the device prints it (fixed key order, compact)."""
    return json.dumps({k: payload[k] for k in ACTIVATION_KEYS}, separators=(",", ":"))


def qr_text(payload: dict[str, str]) -> str:
    import io

    import segno

    out = io.StringIO()
    segno.make(activation_text(payload), error="l").terminal(out=out, compact=True, border=2)
    return out.getvalue()


# ---- registration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    ok: bool  # the device is on the server now (registered, or was already)
    message: str


def register(client: Any, payload: dict[str, str]) -> Registration:
    """POST /device with the activation JSON; the outcome in plain words."""
    from twtools.server.client import ServerError

    name, dtype = payload["name"], payload["device_type"]
    try:
        client.register_device(payload)
    except ServerError as e:
        words = server_problem(e, client.url)
        if words:
            return Registration(False, words)
        d = e.detail
        if d == "Device name already in use":
            return Registration(
                True,
                f"{name} is already registered (name already in use). Nothing to do if that record is this "
                f"board; if the board had an earlier life, run `twomes repurpose {name}` first",
            )
        if d == "Activation token already in use":
            return Registration(
                False, f"not registered: the activation token of {name} is already used by another device"
            )
        if d.startswith("Unknown device type"):
            return Registration(
                False,
                f"not registered: unknown device type {dtype!r} on the server. Create it there, or deploy the "
                "board with --config device_type=<a type the server knows>",
            )
        if e.status == 422:
            return Registration(False, f"not registered: the server refused the activation JSON ({d})")
        return Registration(False, f"not registered: {e.status} {d}")
    except Exception as e:  # noqa: BLE001 - network errors of any kind end in one plain sentence
        return Registration(False, server_problem(e, client.url) or f"not registered: {e}")
    return Registration(True, f"registered {name} ({dtype}) on {client.url}")


# ---- the monitor ---------------------------------------------------------------------------------


class Monitor:
    """Turns decoded console events into what the user sees, and acts on the activation line."""

    def __init__(
        self,
        out: TextIO,
        registrar: Callable[[dict[str, str]], Registration] | None = None,
        show_qr: bool = True,
    ) -> None:
        self.out = out
        self.registrar = registrar
        self.show_qr = show_qr
        self.activations: list[dict[str, str]] = []
        self.registrations: list[Registration] = []
        self._partial = ""

    def say(self, text: str) -> None:
        self.out.write(term.paint(PREFIX, "cyan", self.out) + text + "\n")
        self.out.flush()

    def handle(self, ev: Event) -> None:
        if ev.kind == "improv":
            assert ev.frame is not None
            self._end_partial()
            self.out.write("[improv] " + mask_secrets(printable(ev.frame.describe())) + "\n")
        elif ev.kind == "partial":
            self.out.write(mask_secrets(ev.text))
            self._partial += ev.text
        else:
            self.out.write(mask_secrets(ev.text) + "\n")
            line, self._partial = self._partial + ev.text, ""
            payload = find_activation(line)
            if payload:
                self.on_activation(payload)
        self.out.flush()

    def _end_partial(self) -> None:
        if self._partial:
            self.out.write("\n")
            self._partial = ""

    def on_activation(self, payload: dict[str, str]) -> None:
        if payload in self.activations:
            return
        self.activations.append(payload)
        self.say(f"activation line of {payload['name']} (device type {payload['device_type']})")
        if len(payload["activation_token"]) < 8:
            self.say("warning: the activation token is shorter than 8 characters; a Twomes server refuses it")
        if self.show_qr:
            self.say("scan this QR code with the Twomes app to add the device to an account:")
            self.out.write(qr_text(payload))
        if self.registrar:
            r = self.registrar(payload)
            self.registrations.append(r)
            self.say(r.message)
        elif self.show_qr:
            self.say("to create it on the server: run again with --register URL, or `twomes server register`")


class NoModemLines(Exception):
    """The port has no DTR/RTS (a virtual board's pty, some adapters): no reset through it."""


def _reset_board(ser: Any, port: str) -> None:
    """Pulse EN through RTS (the auto-reset circuit of ESP32 dev boards), with GPIO0 (DTR) left high."""
    try:
        ser.dtr = False
        ser.rts = True
        time.sleep(0.1)
        ser.rts = False
    except (OSError, ValueError, AttributeError) as e:  # pyserial's SerialException is an OSError
        raise NoModemLines(
            f"--reset: {port} has no DTR/RTS lines to pulse the board's EN pin ({e.__class__.__name__}), so "
            "the board was not restarted. Press its reset (EN) button, or use --soft-reset (MicroPython "
            "restarts its program: Ctrl-C, then Ctrl-D at the REPL)"
        ) from None


def _soft_reset(ser: Any) -> None:
    """Stop the program (Ctrl-C), leave a raw REPL (Ctrl-B) and soft-reset MicroPython (Ctrl-D): it
    runs boot.py and main.py again, so their boot output is seen (no chip reset: the bootloader's and
    the ROM's lines are not)."""
    ser.write(b"\r\x03")
    time.sleep(0.3)
    ser.write(b"\x03\x02")
    time.sleep(0.3)
    ser.write(b"\x04")


def _raw_terminal(fd: int) -> list[Any]:
    """Keys as they are typed, Ctrl-C included (it is for the board, as in miniterm and mpremote repl);
    output processing stays, so the board's lines still start at the left. Returns the old mode."""
    import termios

    old = termios.tcgetattr(fd)
    new = termios.tcgetattr(fd)
    new[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON)
    new[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
    new[6][termios.VMIN] = 1
    new[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSAFLUSH, new)
    return old


def _forward_keys(ser: Any, stop: threading.Event) -> None:
    """Typed keys go to the board, Ctrl-C and Ctrl-D included (a REPL is usable); Ctrl-] ends the
    monitor."""
    import select
    import termios

    fd = sys.stdin.fileno()
    old = _raw_terminal(fd)
    try:
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                ch = os.read(fd, 64)
                if not ch or b"\x1d" in ch:
                    ch = ch.split(b"\x1d")[0]
                    if ch:
                        ser.write(ch)
                    stop.set()
                    break
                ser.write(ch.replace(b"\n", b"\r"))
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def monitor(
    port: str,
    out: TextIO,
    baud: int = 115200,
    registrar: Callable[[dict[str, str]], Registration] | None = None,
    show_qr: bool = True,
    timeout: float | None = None,
    exit_after_register: bool = False,
    reset: bool = False,
    keys: bool = False,
    soft_reset: bool = False,
) -> int:
    ser = open_serial(port, baud, timeout=0.05)
    mon = Monitor(out, registrar, show_qr)
    dec = ConsoleDecoder()
    stop = threading.Event()
    if keys:
        threading.Thread(target=_forward_keys, args=(ser, stop), daemon=True).start()
    mon.say(f"monitoring {port} at {baud} baud" + ("; Ctrl-] to quit" if keys else "; Ctrl-C to quit"))
    if reset:
        try:
            _reset_board(ser, port)
        except NoModemLines as e:
            mon.say(str(e))
    if soft_reset:
        _soft_reset(ser)
    deadline = time.monotonic() + timeout if timeout else None
    last = time.monotonic()
    try:
        while not stop.is_set():
            try:
                data = ser.read(ser.in_waiting or 1)
            except Exception as e:  # noqa: BLE001 - pyserial raises several kinds when a board goes away
                mon.say(f"the board went away ({e}); is the cable still in?")
                return 1
            now = time.monotonic()
            events = dec.feed(data) if data else dec.flush(now - last)
            if data:
                last = now
            for ev in events:
                mon.handle(ev)
            if exit_after_register and mon.registrations:
                break
            if deadline and now > deadline:
                if exit_after_register:
                    mon.say(
                        f"no activation line within {timeout:g} s. The device prints it at boot: press the "
                        "board's reset button, or run with --reset"
                    )
                    return 1
                break
    finally:
        stop.set()
        ser.close()
    if exit_after_register:
        return 0 if mon.registrations and mon.registrations[-1].ok else 1
    return 0


def run(args: argparse.Namespace) -> int:
    registrar = None
    if args.register is not None:
        if args.register:  # the older spelling: --register URL
            args.server = args.register
        try:
            client = admin_client(args)
        except AdminArgsError as e:
            term.error(str(e))
            return 2

        def registrar(payload: dict[str, str]) -> Registration:
            return register(client, payload)

    if args.exit_after_register and not registrar:
        print("error: --exit-after-register needs --register URL", file=sys.stderr)
        return 2
    try:
        device = pick_port(args.port)
        keys = os.name == "posix" and sys.stdin.isatty() and not args.no_input  # termios: POSIX only
        return monitor(
            device,
            sys.stdout,
            baud=args.baud,
            registrar=registrar,
            show_qr=args.qr,
            timeout=args.timeout,
            exit_after_register=args.exit_after_register,
            reset=args.reset,
            keys=keys,
            soft_reset=args.soft_reset,
        )
    except PortError as e:
        term.error(str(e))
        return 2


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "monitor",
        help="serial console: activation line, QR code, registration on the server, Improv decoded",
        description="Show the board's console without resetting it, as miniterm or `mpremote repl`: typed "
        "keys go to the board (Ctrl-C and Ctrl-D too), Ctrl-] quits. The activation line is shown as a "
        "QR code and, with --register, the device is created on the server (POST /device).",
    )
    p.add_argument("--port", "-p", help="serial port (default: the one ESP32 board plugged in)")
    p.add_argument("--baud", type=int, default=115200, help="console speed (default 115200)")
    p.add_argument(
        "--register",
        metavar="SERVER",
        nargs="?",
        const="",
        help="create the device on the --server (or $TWOMES_URL) when its activation line appears "
        "(`--register URL`, the older spelling, still works)",
    )
    add_admin_options(p)
    p.add_argument(
        "--qr", action=argparse.BooleanOptionalAction, default=True, help="show the QR code (default on)"
    )
    p.add_argument(
        "--reset",
        action="store_true",
        help="restart the board first through RTS/EN, to see its whole boot log (needs DTR/RTS lines)",
    )
    p.add_argument(
        "--soft-reset",
        action="store_true",
        help="restart MicroPython's program first (Ctrl-C, Ctrl-D): boot.py and main.py print their "
        "boot log again; works on any port, the virtual board's too",
    )
    p.add_argument("--timeout", type=float, help="stop after this many seconds")
    p.add_argument(
        "--exit-after-register",
        action="store_true",
        help="stop once the device is registered (exit 0) or registration failed (exit 1); for scripts",
    )
    p.add_argument("--no-input", action="store_true", help="do not send typed keys to the board")
    p.set_defaults(func=run)
