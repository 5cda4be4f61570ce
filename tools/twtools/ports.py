"""`twomes ports`: the serial ports of this computer, likely ESP32 boards marked; port choice and the
plain-words explanation of port errors shared by flash, deploy and monitor."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BY_ID = Path("/dev/serial/by-id")

# USB-serial bridges found on ESP32 boards, and Espressif's own USB (S2/S3/C3/C6 native USB).
BRIDGES: dict[tuple[int, int], str] = {
    (0x1A86, 0x7523): "CH340",
    (0x1A86, 0x5523): "CH341",
    (0x1A86, 0x55D3): "CH343",
    (0x1A86, 0x55D4): "CH9102",
    (0x10C4, 0xEA60): "CP210x",
    (0x10C4, 0xEA70): "CP2105",
    (0x10C4, 0xEA71): "CP2108",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6014): "FTDI FT232H",
    (0x0403, 0x6015): "FTDI FT-X",
    (0x303A, 0x1001): "Espressif USB-JTAG/serial",
    (0x303A, 0x1002): "Espressif USB-JTAG/serial",
    (0x303A, 0x0002): "Espressif USB CDC",
    (0x303A, 0x4001): "Espressif USB CDC (MicroPython)",
}
ESPRESSIF_VID = 0x303A


@dataclass
class Port:
    device: str
    description: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    by_id: str | None
    bridge: str | None  # name of a known ESP32 USB bridge, None when unknown
    access: bool  # this user may open it

    @property
    def likely_esp32(self) -> bool:
        return self.bridge is not None

    @property
    def usb_id(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else "-"


def bridge_name(vid: int | None, pid: int | None) -> str | None:
    if vid is None or pid is None:
        return None
    if (vid, pid) in BRIDGES:
        return BRIDGES[(vid, pid)]
    return "Espressif USB" if vid == ESPRESSIF_VID else None


def _by_id_links() -> dict[str, str]:
    links: dict[str, str] = {}
    if BY_ID.is_dir():
        for link in sorted(BY_ID.iterdir()):
            links.setdefault(os.path.realpath(link), str(link))
    return links


def list_ports() -> list[Port]:
    """All serial ports pyserial sees, ESP32 candidates first."""
    from serial.tools import list_ports as lp

    links = _by_id_links()
    found = []
    for info in lp.comports():
        dev = info.device
        found.append(
            Port(
                device=dev,
                description=info.description if info.description != "n/a" else "",
                vid=info.vid,
                pid=info.pid,
                serial_number=info.serial_number,
                by_id=links.get(os.path.realpath(dev)),
                bridge=bridge_name(info.vid, info.pid),
                access=os.access(dev, os.R_OK | os.W_OK),
            )
        )
    found.sort(key=lambda p: (not p.likely_esp32, p.device))
    return found


def permission_hint(device: str) -> str:
    """How to get access to ``device`` on this system."""
    group = "dialout"
    try:
        import grp

        group = grp.getgrgid(os.stat(device).st_gid).gr_name
    except (OSError, KeyError, ImportError):
        pass
    return (
        f"no permission to open {device}: add yourself to the '{group}' group with "
        f"`sudo usermod -aG {group} $USER`, then log out and back in (or run `newgrp {group}`)"
    )


class PortError(Exception):
    """A port problem, said in plain words."""


def explain_open_error(device: str, exc: BaseException) -> str:
    """Plain words for an exception raised while opening ``device`` (pyserial or OS)."""
    err = getattr(exc, "errno", None)
    text = str(exc)
    if err == errno.EACCES or "Permission denied" in text:
        return permission_hint(device)
    if err in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text or "busy" in text.lower():
        return (
            f"{device} is busy: another program has it open (a serial monitor, an IDE, another twomes "
            "command, or ModemManager); close it and try again"
        )
    if err == errno.ENOENT or "No such file" in text:
        return f"{device} does not exist: is the board plugged in? `twomes ports` lists the ports"
    return f"cannot open {device}: {text}"


def open_serial(device: str, baudrate: int = 115200, timeout: float | None = 0.1) -> Any:
    """Open ``device`` with pyserial WITHOUT resetting an ESP32: DTR and RTS are set inactive before the
    port opens (on most boards DTR/RTS drive GPIO0/EN), and the port is locked against other programs.
    Raises PortError in plain words."""
    import serial

    ser = serial.Serial()
    ser.port = device
    ser.baudrate = baudrate
    ser.timeout = timeout
    ser.dtr = False
    ser.rts = False
    ser.exclusive = True
    try:
        ser.open()
    except (serial.SerialException, OSError) as e:
        raise PortError(explain_open_error(device, e)) from None
    return ser


def check_port(device: str) -> None:
    """Raise PortError (plain words) when ``device`` cannot be opened: missing, busy, no permission."""
    open_serial(device).close()


def pick_port(port: str | None) -> str:
    """``port`` if given; otherwise the one likely ESP32 board. Raises PortError when that is unclear."""
    if port:
        return port
    candidates = [p for p in list_ports() if p.likely_esp32]
    if len(candidates) == 1:
        p = candidates[0]
        print(f"using {p.device} ({p.bridge})", file=sys.stderr)
        return p.device
    if not candidates:
        raise PortError(
            "no ESP32 board found (no CH340/CP210x/FTDI/Espressif USB serial port); plug the board in "
            "with a data cable, or give --port (see `twomes ports`)"
        )
    names = ", ".join(p.device for p in candidates)
    raise PortError(f"several boards found ({names}); choose one with --port")


def format_table(ports: list[Port]) -> str:
    if not ports:
        return "no serial ports found (is the board plugged in with a data cable, and its driver installed?)"
    rows = [("PORT", "ESP32?", "USB ID", "DESCRIPTION", "BY-ID")]
    for p in ports:
        mark = f"yes ({p.bridge})" if p.bridge else "-"
        rows.append((p.device, mark, p.usb_id, p.description, p.by_id or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows]
    for p in ports:
        if not p.access:
            lines.append("note: " + permission_hint(p.device))
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    ports = list_ports()
    if not args.all:
        ports = [p for p in ports if p.vid is not None or p.likely_esp32]
    if args.json:
        print(json.dumps([asdict(p) | {"likely_esp32": p.likely_esp32} for p in ports], indent=1))
    else:
        print(format_table(ports))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ports", help="list serial ports, marking likely ESP32 boards")
    p.add_argument("--all", action="store_true", help="also list ports without USB ids (built-in UARTs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
