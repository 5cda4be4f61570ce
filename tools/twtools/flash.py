"""`twomes flash FIRMWARE.bin`: erase the chip and write a MicroPython ESP32 firmware with esptool.

The seed's step 1 (`esptool erase_flash`, then `write_flash` at 460800 baud) as one command that first
checks the file is an ESP32 image for the right chip and picks the offset itself: a merged
``firmware.bin`` goes to the chip's bootloader offset (0x1000 on ESP32), an app-only image to 0x10000.
The documented firmware is MicroPython's OTA variant (ESP32_GENERIC-OTA: two app partitions).
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from twtools import esp32image, term
from twtools.ports import PortError, permission_hint, pick_port

FAST_BAUD = 460800
SAFE_BAUD = 115200


@dataclass
class EsptoolResult:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def connected(self) -> bool:
        """esptool reached the chip (a later failure is a transfer problem, worth a slower retry)."""
        return not re.search(
            r"Failed to connect|No serial data received|Could not open|Wrong boot mode|Permission denied|"
            r"Errno (2|11|13|16)\b",
            self.output,
        )


def esptool(args: list[str], echo: bool = True) -> EsptoolResult:
    """The one door to esptool: ``python -m esptool ARGS``. With ``echo`` the terminal is its own (its
    progress bar on a terminal, plain lines in a log) and its error messages are shown and kept for
    explaining them; without, all its output is kept (e.g. read-mac's answer) and nothing shown."""
    cmd = [sys.executable, "-m", "esptool", *args]
    if echo:
        print("$ " + command_line(args), file=sys.stderr, flush=True)
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)  # stdout: the terminal, esptool's own
    else:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stream = proc.stderr if echo else proc.stdout
    assert stream is not None
    chunks = []
    while True:
        chunk = stream.read1(4096)  # type: ignore[attr-defined]
        if not chunk:
            break
        chunks.append(chunk)
        if echo:
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
    return EsptoolResult(proc.wait(), b"".join(chunks).decode("utf-8", "replace"))


def command_line(args: list[str]) -> str:
    """The esptool command as a person types it (quoted for a POSIX shell)."""
    return " ".join(["esptool", *(shlex.quote(a) for a in args)])


def explain(result: EsptoolResult, port: str) -> str:
    """Plain words (and what to do) for a failed esptool run."""
    text = result.output
    m = re.search(r"This chip is ([\w-]+), not ([\w-]+)", text)
    if m:
        return (
            f"the board is an {m.group(1)}, but the firmware is for {m.group(2)}: download the MicroPython "
            f"firmware for {m.group(1)} (or use --chip to say which chip you have)"
        )
    if "Permission denied" in text or "Errno 13" in text:
        return permission_hint(port)
    if "exclusively lock" in text or "Errno 16" in text or "Errno 11" in text:
        return (
            f"{port} is busy: another program has it open (`twomes monitor`, a serial monitor, an IDE); "
            "close it and try again"
        )
    if "Could not open" in text and ("No such file" in text or "Errno 2" in text):
        return f"{port} does not exist: is the board plugged in? `twomes ports` lists the ports"
    if "Failed to connect" in text or "No serial data received" in text or "Wrong boot mode" in text:
        return (
            f"no answer from an ESP32 bootloader on {port}: hold the BOOT button, press and release EN/RST, "
            "release BOOT, then run the command again (some boards need this; check the cable carries data)"
        )
    if "Unexpected chip id in image" in text:
        return "the image is for another chip than the board (see the esptool message above)"
    last = [line for line in text.splitlines() if line.strip()]
    return f"esptool failed (exit {result.returncode}): {last[-1] if last else 'no output'}"


class FlashError(Exception):
    """The command cannot be used as given (a file that is no firmware, no port): exit 2."""

    exit_code = 2


class FlashFailed(FlashError):
    """esptool tried and failed on the board: exit 1."""

    exit_code = 1


CHIPS = ("esp32", "esp32s2", "esp32s3", "esp32c2", "esp32c3", "esp32c5", "esp32c6", "esp32h2", "esp32p4")


def chip_name(text: str) -> str:
    """Any case and spelling esptool or a data sheet uses: ESP32, esp32-s3, ESP32S3 -> esp32s3."""
    name = text.strip().lower().replace("-", "").replace("_", "")
    if name != "auto" and name not in CHIPS:
        raise argparse.ArgumentTypeError(f"unknown chip {text!r}; one of: auto, {', '.join(CHIPS)}")
    return name


def check_firmware(path: Path, chip: str = "auto", erase: bool = True) -> esp32image.Firmware:
    """Refuse anything that is not a flashable ESP32 firmware for ``chip``; say what was expected."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FlashError(f"cannot read {path}: {e.strerror}") from None
    try:
        fw = esp32image.inspect_firmware(data)
    except esp32image.ImageError as e:
        raise FlashError(f"{path} is not a flashable ESP32 firmware: {e}") from None
    if chip != "auto" and chip != fw.chip:
        raise FlashError(
            f"{path} is built for {fw.chip}, not {chip}: use the MicroPython firmware for {chip}"
        )
    if fw.kind == "app" and erase:
        raise FlashError(
            f"{path} is an app-only image (version {fw.version}); after erasing, the chip would have no "
            "bootloader and no partition table to start it. Flash the merged firmware.bin from "
            "micropython.org (e.g. ESP32_GENERIC-OTA), or add --no-erase to replace only the app at 0x10000 "
            "of a board that already runs MicroPython"
        )
    return fw


def describe(fw: esp32image.Firmware, path: Path) -> str:
    app = fw.app.app if fw.app else None
    parts = [f"{path.name}: {fw.kind} image for {fw.chip}"]
    if app:
        parts.append(f"{app.project_name} {app.version} (IDF {app.idf_ver})")
    if fw.kind == "merged":
        slots = ", ".join(p.label for p in fw.app_slots) or "factory app only"
        parts.append(f"app partitions: {slots}")
    parts.append(f"written at {fw.flash_offset:#x}")
    return "; ".join(parts)


def plan(
    fw: esp32image.Firmware,
    path: Path,
    device: str,
    erase: bool,
    offset: int | None,
    connect_attempts: int | None,
    bauds: tuple[int, ...],
) -> list[list[str]]:
    """The esptool commands, one per baud rate to try: erase and write in one connection
    (``write-flash --erase-all``), flash mode, frequency and size as esptool detects them."""
    common = ["--chip", fw.chip, "--port", device]
    if connect_attempts is not None:
        common += ["--connect-attempts", str(connect_attempts)]
    write = ["write-flash", *(["--erase-all"] if erase else []), "-z"]
    write += [hex(fw.flash_offset if offset is None else offset), str(path)]
    return [[*common, "--baud", str(baud), *write] for baud in bauds]


def flash(
    path: Path,
    port: str | None = None,
    chip: str = "auto",
    erase: bool = True,
    offset: int | None = None,
    connect_attempts: int | None = None,
    bauds: tuple[int, ...] = (FAST_BAUD, SAFE_BAUD),
    dry_run: bool = False,
) -> int:
    fw = check_firmware(path, chip, erase)
    print(describe(fw, path))
    if fw.kind == "merged" and not fw.ota_capable:
        print(
            "warning: this firmware has no second app partition, so the device cannot install firmware "
            "images over the air (app bundles still work); the documented firmware is ESP32_GENERIC-OTA",
            file=sys.stderr,
        )
    try:
        device = pick_port(port)
    except PortError as e:
        if not dry_run:
            raise FlashError(str(e)) from None
        print(f"note: {e}; PORT stands for it below", file=sys.stderr)
        device = "PORT"
    commands = plan(fw, path, device, erase, offset, connect_attempts, bauds)
    if dry_run:
        print("would run (the second only if writing at the first baud rate fails after connecting):")
        for args in commands:
            print(command_line(args))
        return 0
    if erase:
        print("erasing the whole flash (firmware, Wi-Fi settings, tokens: everything), then writing ...")
    for i, args in enumerate(commands):
        r = esptool(args)
        if r.ok:
            break
        if not r.connected or i == len(commands) - 1:
            raise FlashFailed(explain(r, device))
        print(f"writing at {bauds[i]} baud failed; trying again at {bauds[i + 1]} baud", file=sys.stderr)
    print(f"done: {fw.version or 'firmware'} written to {device}; the board restarts into MicroPython.")
    print("next: `twomes deploy --config server_url=https://...` to put the Twomes app on it")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return flash(
            Path(args.firmware),
            port=args.port,
            chip=args.chip,
            erase=not args.no_erase,
            offset=args.offset,
            connect_attempts=args.connect_attempts,
            bauds=(args.baud, SAFE_BAUD) if args.baud > SAFE_BAUD else (args.baud,),
            dry_run=args.dry_run,
        )
    except FlashError as e:
        term.error(str(e))
        return e.exit_code


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "flash",
        help="erase an ESP32 and write a MicroPython firmware (esptool)",
        description="Erase the whole flash and write a MicroPython ESP32 firmware image in one esptool "
        "run at 460800 baud (retried at 115200). Use the OTA variant, e.g. "
        "ESP32_GENERIC-OTA-<date>-<version>.bin. Exit status: 0 written, 1 esptool failed on the board, "
        "2 not a usable firmware file or no port.",
    )
    p.add_argument(
        "firmware", metavar="FIRMWARE.bin", help="merged firmware.bin, or an app-only image with --no-erase"
    )
    p.add_argument("--port", "-p", help="serial port (default: the one ESP32 board plugged in)")
    p.add_argument(
        "--chip",
        default="auto",
        type=chip_name,
        help="chip the board has, any case (ESP32, esp32-s3; default: the chip the image is built for)",
    )
    p.add_argument(
        "--baud",
        type=int,
        default=FAST_BAUD,
        help=f"baud rate of the write (default {FAST_BAUD}; a failed write is retried at {SAFE_BAUD})",
    )
    p.add_argument("--dry-run", action="store_true", help="print the esptool commands, run nothing")
    p.add_argument(
        "--no-erase", action="store_true", help="keep the rest of the flash (Wi-Fi, tokens, files)"
    )
    p.add_argument("--offset", type=lambda s: int(s, 0), help="flash address (default: from the image)")
    p.add_argument("--connect-attempts", type=int, help="esptool connection attempts (default 7)")
    p.set_defaults(func=run)
