"""`twomes flash` without a chip: image checks, offsets, the esptool calls it makes, and the real esptool's
failures (missing port, busy port, no chip answering on a pty) in plain words."""

from __future__ import annotations

import os
import tty

import pytest

from twtools import esp32image as e
from twtools import flash as f
from twtools import ports
from twtools.cli import main


@pytest.fixture
def merged(tmp_path):
    p = tmp_path / "ESP32_GENERIC-OTA-v1.29.0.bin"
    p.write_bytes(e.build_merged_firmware(e.build_app_image("v1.29.0")))
    return p


@pytest.fixture
def pty_port():
    master, slave = os.openpty()
    tty.setraw(slave)
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_refuses_what_is_not_a_firmware(tmp_path, capsys):
    notes = tmp_path / "README.txt"
    notes.write_text("not firmware\n" * 10)
    assert main(["flash", str(notes), "--port", "/dev/null"]) == 2
    err = capsys.readouterr().err
    assert "is not a flashable ESP32 firmware: not an ESP32 image: first byte is 0x6e" in err
    assert "merged firmware.bin" in err and "app-only image" in err
    assert main(["flash", str(tmp_path / "missing.bin")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_app_only_image_needs_no_erase_and_chip_must_match(tmp_path, merged, capsys):
    app = tmp_path / "micropython.bin"
    app.write_bytes(e.build_app_image("v1.29.0"))
    assert main(["flash", str(app), "--port", "/dev/null"]) == 2
    assert "app-only image (version v1.29.0); after erasing" in capsys.readouterr().err
    assert main(["flash", str(merged), "--chip", "ESP32-S3", "--port", "/dev/null"]) == 2
    assert "built for esp32, not esp32s3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # a chip esptool does not know: a usage error
        main(["flash", str(merged), "--chip", "esp99"])
    assert exit_.value.code == 2 and "unknown chip 'esp99'" in capsys.readouterr().err


def test_the_esptool_calls(merged, monkeypatch, capsys):
    calls = []
    results = iter(
        [
            f.EsptoolResult(
                2,
                "Connected to ESP32 on /dev/ttyUSB0:\nA fatal error occurred: Packet content transfer stopped",
            ),
            f.EsptoolResult(0, "Connected to ESP32 on /dev/ttyUSB0:\nWrote 1000 bytes"),
        ]
    )

    def fake(args, echo=True):
        calls.append(args)
        return next(results)

    monkeypatch.setattr(f, "esptool", fake)
    assert f.flash(merged, port="/dev/ttyUSB0") == 0
    write = ["write-flash", "--erase-all", "-z", "0x1000", str(merged)]  # erase and write: one connection
    assert calls[0] == ["--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800", *write]
    assert calls[1] == ["--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "115200", *write]
    assert len(calls) == 2
    out = capsys.readouterr()
    assert (
        "merged image for esp32; micropython v1.29.0" in out.out and "app partitions: ota_0, ota_1" in out.out
    )
    assert "trying again at 115200 baud" in out.err

    # an app-only image with --no-erase: no erase, written at 0x10000
    calls.clear()
    app = merged.with_name("micropython.bin")
    app.write_bytes(e.build_app_image("v1.29.0"))
    monkeypatch.setattr(f, "esptool", lambda args, echo=True: calls.append(args) or f.EsptoolResult(0, ""))
    assert f.flash(app, port="/dev/ttyUSB0", erase=False) == 0
    assert len(calls) == 1 and calls[0][-2:] == ["0x10000", str(app)]


def test_no_retry_when_the_chip_never_answered(merged, monkeypatch):
    calls = []

    def fake(args, echo=True):
        calls.append(args)
        return f.EsptoolResult(
            2, "A fatal error occurred: Failed to connect to ESP32: No serial data received."
        )

    monkeypatch.setattr(f, "esptool", fake)
    with pytest.raises(f.FlashError, match="hold the BOOT button"):
        f.flash(merged, port="/dev/ttyUSB0", erase=False)
    assert len(calls) == 1


def test_no_board_found(merged, monkeypatch, capsys):
    monkeypatch.setattr(ports, "list_ports", lambda: [])
    assert main(["flash", str(merged)]) == 2
    assert "no ESP32 board found" in capsys.readouterr().err
    two = [ports.Port(f"/dev/ttyUSB{i}", "", 0x1A86, 0x7523, None, None, "CH340", True) for i in range(2)]
    monkeypatch.setattr(ports, "list_ports", lambda: two)
    assert main(["flash", str(merged)]) == 2
    assert (
        "several boards found (/dev/ttyUSB0, /dev/ttyUSB1); choose one with --port" in capsys.readouterr().err
    )


def test_real_esptool_errors(merged, tmp_path, pty_port, capsys):
    # a port that does not exist
    assert main(["flash", str(merged), "--port", str(tmp_path / "ttyUSB9"), "--connect-attempts", "1"]) == 1
    assert "ttyUSB9 does not exist: is the board plugged in?" in capsys.readouterr().err
    # a port another program holds (e.g. `twomes monitor`)
    holder = ports.open_serial(pty_port)
    try:
        assert main(["flash", str(merged), "--port", pty_port, "--connect-attempts", "1"]) == 1
        assert f"{pty_port} is busy" in capsys.readouterr().err
    finally:
        holder.close()
    # a port where no ESP32 bootloader answers
    assert main(["flash", str(merged), "--port", pty_port, "--connect-attempts", "1", "--no-erase"]) == 1
    assert (
        f"no answer from an ESP32 bootloader on {pty_port}: hold the BOOT button" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("output", "words"),
    [
        (
            "A fatal error occurred: This chip is ESP32-S3, not ESP32. Wrong chip argument?",
            "the board is an ESP32-S3, but the firmware is for ESP32",
        ),
        (
            "Could not open /dev/ttyUSB0, the port is busy or doesn't exist.\n([Errno 13] Permission denied: '/dev/ttyUSB0')",
            "no permission to open /dev/ttyUSB0",
        ),
        ("something else entirely\n", "esptool failed (exit 2): something else entirely"),
    ],
)
def test_explain(output, words):
    assert words in f.explain(f.EsptoolResult(2, output), "/dev/ttyUSB0")


def test_ports_listing(monkeypatch, capsys):
    fake = [
        ports.Port(
            "/dev/ttyUSB0", "USB Serial", 0x1A86, 0x7523, None, "/dev/serial/by-id/usb-1a86", "CH340", False
        ),
        ports.Port("/dev/ttyACM0", "Arduino", 0x2341, 0x0043, None, None, None, True),
    ]
    monkeypatch.setattr(ports, "list_ports", lambda: fake)
    assert main(["ports"]) == 0
    out = capsys.readouterr().out
    assert "/dev/ttyUSB0  yes (CH340)  1a86:7523  USB Serial" in out
    assert "/dev/ttyACM0  -" in out
    assert "no permission to open /dev/ttyUSB0" in out and "usermod -aG" in out
    assert main(["ports", "--json"]) == 0
    assert '"likely_esp32": true' in capsys.readouterr().out
    assert (
        ports.bridge_name(0x303A, 0x9999) == "Espressif USB" and ports.bridge_name(0x10C4, 0xEA60) == "CP210x"
    )


def test_dry_run_prints_the_exact_esptool_commands(merged, capsys):
    argv = [
        "flash",
        str(merged),
        "--port",
        "/dev/ttyUSB0",
        "--chip",
        "ESP32",
        "--baud",
        "921600",
        "--dry-run",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    common = "esptool --chip esp32 --port /dev/ttyUSB0 --baud"
    assert out[-2] == f"{common} 921600 write-flash --erase-all -z 0x1000 {merged}"
    assert out[-1] == f"{common} 115200 write-flash --erase-all -z 0x1000 {merged}"
    assert (
        main(["flash", str(merged), "--port", "/dev/ttyUSB0", "--baud", "115200", "--no-erase", "--dry-run"])
        == 0
    )
    assert capsys.readouterr().out.splitlines()[-1] == f"{common} 115200 write-flash -z 0x1000 {merged}"


def test_esptool_owns_the_terminal(merged, tmp_path):
    """esptool's stdout is the terminal itself (a pty here): it sees a TTY, so its own progress display
    and colours work; only its errors pass through twomes (kept for the plain-words explanation)."""
    import subprocess
    import sys

    master, slave = os.openpty()
    probe = tmp_path / "esptool"
    probe.mkdir()
    (probe / "esptool.py").write_text(
        "import sys\nprint('stdout is a tty:', sys.stdout.isatty())\n"
        "print('A fatal error occurred: Failed to connect to ESP32', file=sys.stderr)\nsys.exit(2)\n"
    )
    code = "from twtools import flash; r = flash.esptool(['chip-id']); print('kept:', r.output.strip(), r.connected)"
    env = {**os.environ, "PYTHONPATH": str(probe)}  # `python -m esptool` finds the probe first
    proc = subprocess.run(
        [sys.executable, "-c", code], stdout=slave, stderr=subprocess.PIPE, env=env, timeout=60
    )
    os.close(slave)
    text = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        text += chunk
    os.close(master)
    assert proc.returncode == 0, proc.stderr
    assert b"stdout is a tty: True" in text
    assert b"kept: A fatal error occurred: Failed to connect to ESP32 False" in text
    assert b"Failed to connect" in proc.stderr  # shown, too
