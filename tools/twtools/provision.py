"""`twomes provision`: give a device its Wi-Fi network, as the provisioning app would.

``--portal URL`` talks to the device's setup portal JSON API (``POST /api/wifi``, then ``GET
/api/status`` until the device has tested the credentials); ``--serial PORT`` does the same over Improv
Wi-Fi serial (USB). The answer is printed in plain words; the exit code is 0 only when the device joined
the network (1: the device answered but did not join, 2: usage error or no answer from the device).
The Wi-Fi password is never printed; ``--password -`` reads it from standard input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

EXIT_JOINED = 0
EXIT_NOT_JOINED = 1
EXIT_ERROR = 2

_WORDS = {
    "joined": "joined {ssid}: the device stores the network and closes its setup network in a few seconds",
    "wrong_password": "not joined: {ssid} did not accept the password",
    "not_found": "not joined: the device found no network called {ssid}",
    "timeout": "not joined: {ssid} did not answer in time",
    "failed": "not joined: connecting to {ssid} failed",
    "invalid": "not joined: the device refused the settings ({text})",
}

Say = Callable[[str], None]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "provision",
        help="give a device its Wi-Fi network (setup portal API or Improv serial)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_args(p)
    p.set_defaults(func=run)


def _add_args(p: argparse.ArgumentParser) -> None:
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--portal", metavar="URL", help="the device's setup page, e.g. http://192.168.4.1")
    to.add_argument("--serial", metavar="PORT", help="the device's USB serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--ssid", required=True, help="the Wi-Fi network the device should join")
    p.add_argument("--password", default="", help="its password ('-': read from standard input; empty: open)")
    p.add_argument("--name", help="a friendly name for the device (portal only; Improv has no field for it)")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the answer (default 90)")
    p.add_argument("--baud", type=int, default=115200, help="serial speed (default 115200)")


def run(args: argparse.Namespace) -> int:
    password = args.password
    if password == "-":
        password = sys.stdin.readline().rstrip("\r\n")
    from twtools.devicecode import credentials_problem

    bad = credentials_problem(args.ssid, password)  # the device's own rule, checked before sending
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return EXIT_ERROR
    if args.portal:
        return provision_portal(args.portal, args.ssid, password, args.name, args.timeout)
    if args.name:
        print("note: --name is not sent over Improv (the protocol has no field for it)")
    return provision_serial(args.serial, args.ssid, password, args.timeout, args.baud)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="twomes provision", description=__doc__)
    _add_args(p)
    return run(p.parse_args(argv))


# ---- setup portal JSON API ---------------------------------------------------------------------------
def _call(url: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            answer = json.loads(e.read() or b"{}")
        except ValueError:
            answer = {}
        return e.code, answer if isinstance(answer, dict) else {}


def provision_portal(
    portal: str, ssid: str, password: str, name: str | None, timeout: float, say: Say = print
) -> int:
    base = portal.rstrip("/")
    body: dict[str, Any] = {"ssid": ssid, "password": password}
    if name:
        body["name"] = name
    try:
        status, answer = _call(base + "/api/wifi", body)
    except (OSError, ValueError) as e:
        say(f"error: no answer from the device at {base} ({e}); is this computer on the device's network?")
        return EXIT_ERROR
    if status != 202:
        say(f"the device refused the settings ({status}): {answer.get('error', 'no reason given')}")
        return EXIT_NOT_JOINED
    say(f"the device is testing {ssid} ...")
    deadline = time.monotonic() + timeout
    unreachable = False
    while time.monotonic() < deadline:
        time.sleep(1.0)
        try:
            status, st = _call(base + "/api/status")
        except (OSError, ValueError):
            if not unreachable:
                say(
                    "the device does not answer right now (it may have moved its network while testing); retrying"
                )
                unreachable = True
            continue
        if status != 200 or st.get("busy") or st.get("result") is None:
            continue
        result = str(st["result"])
        words = _WORDS.get(result, "not joined: {text}")
        say(words.format(ssid=st.get("result_ssid") or ssid, text=st.get("result_text") or result))
        return EXIT_JOINED if result == "joined" else EXIT_NOT_JOINED
    say(f"no result from the device within {timeout:.0f} s")
    return EXIT_ERROR


# ---- Improv Wi-Fi serial -----------------------------------------------------------------------------
MAGIC = b"IMPROV"
T_STATE, T_ERROR, T_RPC, T_RESULT = 1, 2, 3, 4
READY, PROVISIONING, PROVISIONED = 2, 3, 4
ERRORS = {1: "invalid RPC packet", 2: "unknown RPC command", 3: "unable to connect", 0xFF: "unknown error"}


def frame(ptype: int, data: bytes) -> bytes:
    f = MAGIC + bytes([1, ptype, len(data)]) + data
    return f + bytes([sum(f) & 0xFF])


def rpc(cmd: int, payload: bytes = b"") -> bytes:
    return frame(T_RPC, bytes([cmd, len(payload)]) + payload)


def wifi_rpc(ssid: str, password: str) -> bytes:
    s, p = ssid.encode(), password.encode()
    return rpc(1, bytes([len(s)]) + s + bytes([len(p)]) + p)


def strings(data: bytes) -> list[str]:
    """The strings of an RPC result's data (after the command and length bytes)."""
    out, i = [], 2
    while i < len(data):
        n = data[i]
        out.append(data[i + 1 : i + 1 + n].decode("utf-8", "replace"))
        i += 1 + n
    return out


class FrameReader:
    """Improv frames out of a byte stream that also carries console text."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out: list[tuple[int, bytes]] = []
        while True:
            i = self.buf.find(MAGIC)
            if i < 0:
                self.buf = self.buf[-(len(MAGIC) - 1) :]
                return out
            f = self.buf[i:]
            if len(f) < 9 or len(f) < 10 + f[8]:
                self.buf = f
                return out
            n = 10 + f[8]
            if f[6] == 1 and sum(f[: n - 1]) & 0xFF == f[n - 1]:
                out.append((f[7], f[9 : n - 1]))
                self.buf = f[n:]
            else:
                self.buf = f[1:]  # not a frame after all


def provision_serial(
    port: str, ssid: str, password: str, timeout: float, baud: int = 115200, say: Say = print
) -> int:
    try:
        import serial  # pyserial, only needed here
    except ImportError:
        say("error: pyserial is not installed (pip install pyserial)")
        return EXIT_ERROR
    try:
        ser = serial.Serial(port, baud, timeout=0.1)
    except (OSError, ValueError) as e:
        say(f"error: cannot open {port}: {e}")
        return EXIT_ERROR
    with ser:
        reader = FrameReader()

        def frames(seconds: float) -> list[tuple[int, bytes]]:
            end = time.monotonic() + seconds
            got: list[tuple[int, bytes]] = []
            while time.monotonic() < end and not got:
                got = reader.feed(ser.read(256))
            return got

        state = None
        deadline = time.monotonic() + 10
        while state is None and time.monotonic() < deadline:
            ser.write(b"\n" + rpc(2) + b"\n")  # request current state, once a second
            for t, data in frames(1.0):
                if t == T_STATE and data:
                    state = data[0]
        if state is None:
            say(f"error: no Improv answer on {port} within 10 s (is the device in setup mode?)")
            return EXIT_ERROR
        if state == PROVISIONED:  # a running device refuses new settings (docs/setup-mode.md)
            say(
                f"not sent: the device on {port} runs already (Improv: provisioned). To change its Wi-Fi, "
                "hold its button for 3 s (the LED goes off; setup mode), then run this again"
            )
            return EXIT_NOT_JOINED
        time.sleep(0.3)
        ser.reset_input_buffer()  # answers to the polling above are not answers to what follows
        reader.buf = b""
        ser.write(b"\n" + wifi_rpc(ssid, password) + b"\n")
        say(f"the device is testing {ssid} ...")
        deadline = time.monotonic() + timeout
        joined_at = None
        while time.monotonic() < deadline:
            for t, data in frames(0.5):
                if t == T_ERROR and data and data[0] != 0:
                    if data[0] == 3:
                        say(
                            f"not joined: the device could not connect to {ssid} (Improv does not say why; "
                            "the device's console log has the reason)"
                        )
                    else:
                        say(f"not joined: the device answered with error {ERRORS.get(data[0], data[0])}")
                    return EXIT_NOT_JOINED
                if t == T_STATE and data and data[0] == PROVISIONED and joined_at is None:
                    joined_at = time.monotonic()
                if t == T_RESULT and data and data[0] == 1:
                    urls = strings(data)
                    say(f"joined {ssid}" + (f"; the device suggests {', '.join(urls)}" if urls else ""))
                    return EXIT_JOINED
            if joined_at is not None and time.monotonic() - joined_at > 1.0:  # no result frame followed
                say(f"joined {ssid}")
                return EXIT_JOINED
        say(f"no result from the device within {timeout:.0f} s")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
