"""`twomes monitor`: console decoding, secret masking, QR, and registration on a real reference server,
with a virtual board's console on a pty (the app's own main loop stands in as console_script.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from twtools import improv, monitor
from twtools.cli import main
from twtools.server.testing import ReferenceServer
from twtools.vboard.runner import VirtualBoard

SCRIPT = Path(__file__).with_name("console_script.py")
SECRETS = [
    "hunter2-very-secret",
    "p4ssw0rd!",
    "Mw.cHA2dGhpc2lzYXZlcnlsb25ncmFuZG9tdG9rZW4xMjM0NQ",
    "MQ.Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg",
    "MQ.c2VjcmV0c2VjcmV0c2VjcmV0MTIzNDU2",
]


@pytest.fixture(scope="module")
def server():
    with ReferenceServer() as s:
        yield s


def _board(tmp: Path, mac: str = "24:6F:28:D3:AD:48", script: bool = False, **config) -> VirtualBoard:
    """A virtual board with the real app (or, ``script=True``, the console script as its main.py);
    powered on by _monitor once the port is open: as on a real board, what was printed before the port
    was opened is gone."""
    b = VirtualBoard(tmp, mac=mac, pty=True, config=config or None, heap="128K")
    b.install_app()
    if script:
        shutil.copyfile(SCRIPT, b.fs / "main.py")
    return b


def _wait_port_open(path: str, timeout: float = 20.0) -> None:
    """Until someone holds the port (pyserial's exclusive flock, which the monitor takes), read from
    /proc/locks: probing with a lock of our own could collide with the monitor's and make it "busy"."""
    st = os.stat(path)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/locks") as f:
            if any(
                line.split()[1] == "FLOCK" and line.split()[5] == key for line in f if len(line.split()) > 5
            ):
                time.sleep(0.2)  # pyserial locks first, then configures the port and flushes its input
                return
        time.sleep(0.02)
    raise AssertionError("the monitor did not open the port")


def _activation(board: VirtualBoard) -> dict:
    # what the simulated NVS holds is what the device printed
    nvs = board.nvs()["twomes"]
    return {
        "name": "TWOMES-" + board.mac.replace(":", "")[-6:],
        "device_type": board.config.get("device_type", "Generic-Test"),
        "activation_token": bytes.fromhex(nvs["act_token"][1]).decode(),
    }


def _monitor(board, server, capsys, *extra, token=None, exit_after=True):
    """`twomes monitor ...` on the board's console; the board is powered on once the port is open."""
    argv = ["monitor", "--port", board.pty_path, "--no-input", *extra]
    if "--timeout" not in extra:
        argv += ["--timeout", "30"]
    if server is not None:
        argv += [
            "--register",
            "--server",
            server.url,
            "--admin-token",
            token or server.admin_token,
            *(["--exit-after-register"] if exit_after else []),
        ]
    result = {}
    t = threading.Thread(target=lambda: result.update(rc=main(argv)))
    t.start()
    _wait_port_open(board.pty_path)
    board.power_on()
    t.join(40)
    return result.get("rc"), capsys.readouterr().out


def test_monitor_registers_the_real_app(tmp_path, server, capsys):
    with _board(tmp_path / "b") as board:
        # no --exit-after-register: the monitor goes on after registering, until the timeout
        rc, out = _monitor(board, server, capsys, "--timeout", "3", exit_after=False)
        payload = _activation(board)
    assert rc == 0, out
    # the activation line as the device printed it, then the QR code of exactly that JSON
    line = monitor.activation_text(payload)
    assert line in out.splitlines()
    assert monitor.qr_text(payload) in out
    assert "[twomes] registered TWOMES-D3AD48 (Generic-Test) on " + server.url in out
    assert server.client.device("TWOMES-D3AD48")["state"] == "registered"
    assert "boot: device TWOMES-D3AD48 (Generic-Test)" in out
    # the setup access point's password is meant to be read off the console: shown
    assert "setup: access point TWOMES-D3AD48, password " in out and "password ***" not in out


def test_monitor_decodes_improv_and_masks_secrets(tmp_path, server, capsys):
    with _board(tmp_path / "b", mac="24:6F:28:00:00:0A", script=True) as board:
        rc, out = _monitor(board, server, capsys)
    assert rc == 0, out
    # Improv frames decoded, none shown as raw bytes
    for words in (
        "[improv] state: ready (authorized)",
        "[improv] result (device info): Twomes, 1.0.0, ESP32, TWOMES-00000A",
        "[improv] error: unable to connect",
        "[improv] state: provisioned",
        "[improv] result (send Wi-Fi settings): http://x",
        "prompt> ",
    ):
        assert words in out
    assert "IMPROV" not in out
    # secrets masked; the key names stay so the line still makes sense; the AP password is shown
    for secret in SECRETS:
        assert secret not in out
    assert 'password="***"' in out and '"wifi_pass": "***"' in out and "Bearer ***" in out
    assert "ap_password=" in out and "ap_password=***" not in out
    assert "[twomes] registered TWOMES-00000A" in out


def test_monitor_register_again_and_unknown_type(tmp_path, server, capsys):
    with _board(tmp_path / "b", mac="24:6F:28:00:00:01") as board:
        board.power_on()  # a first boot makes the activation token (kept in NVS)
        payload = _activation_after_boot(board)
        board.power_cut()
        server.client.register_device(payload)  # e.g. registered earlier
        rc, out = _monitor(board, server, capsys, "--no-qr")
    assert rc == 0, out
    assert "TWOMES-000001 is already registered (name already in use)" in out
    assert "█" not in out  # --no-qr

    with _board(tmp_path / "c", mac="24:6F:28:00:00:02", device_type="No-Such-Type") as board:
        rc, out = _monitor(board, server, capsys)
    assert rc == 1
    assert "not registered: unknown device type 'No-Such-Type' on the server" in out


def _activation_after_boot(board: VirtualBoard) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        nvs = board.nvs().get("twomes", {})
        if "act_token" in nvs:
            return _activation(board)
        time.sleep(0.05)
    raise AssertionError("the board did not make its activation token")


def test_monitor_bad_admin_token_and_no_server(tmp_path, server, capsys):
    with _board(tmp_path / "b", mac="24:6F:28:00:00:03") as board:
        rc, out = _monitor(board, server, capsys, "--no-qr", token="MQ.wrongwrongwrongwrongWRONG123")
    assert rc == 1
    assert f"the server at {server.url} rejected the admin token" in out
    assert "wrongwrong" not in out
    assert main(["monitor", "--port", "/dev/null", "--register", server.url]) == 2
    assert "no admin token" in capsys.readouterr().err


def test_monitor_timeout_without_activation():
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    port = os.ttyname(slave)
    out = io.StringIO()
    result = {}
    client = type("C", (), {"url": "http://127.0.0.1:9", "register_device": lambda self, p: None})()

    def run():
        result["rc"] = monitor.monitor(
            port, out, registrar=lambda p: monitor.register(client, p), timeout=1.0, exit_after_register=True
        )

    try:
        t = threading.Thread(target=run)
        t.start()
        _wait_port_open(port)
        os.write(master, b"ets Jun  8 2016 00:22:57\r\nrst:0x1 (POWERON_RESET)\r\n>>> ")
        t.join(10)
    finally:
        os.close(master)
        os.close(slave)
    assert result["rc"] == 1
    text = out.getvalue()
    assert "rst:0x1 (POWERON_RESET)\n>>> " in text  # the prompt without newline shown after a pause
    assert "no activation line within 1 s" in text and "--reset" in text


def test_registration_in_plain_words(server):
    short = {"name": "TWOMES-0000AA", "device_type": "Generic-Test", "activation_token": "1234"}
    r = monitor.register(server.client, short)
    assert not r.ok and r.message.startswith("not registered: the server refused the activation JSON")
    ok = {"name": "TWOMES-0000AB", "device_type": "Generic-Test", "activation_token": "1234567890123456"}
    assert monitor.register(server.client, ok) == monitor.Registration(
        True, f"registered TWOMES-0000AB (Generic-Test) on {server.url}"
    )
    other = dict(ok, name="TWOMES-0000AC")
    r = monitor.register(server.client, other)
    assert not r.ok and "activation token of TWOMES-0000AC is already used" in r.message
    from twtools.server.client import AdminClient

    with AdminClient("http://127.0.0.1:9", "x") as nowhere:
        r = monitor.register(nowhere, ok)
    assert not r.ok and r.message.startswith("cannot reach the server at http://127.0.0.1:9")


# ---- pure parts ---------------------------------------------------------------------------------


def _decode_all(chunks):
    dec = monitor.ConsoleDecoder()
    events = []
    for c in chunks:
        events += dec.feed(c)
    events += dec.flush(idle=5)
    return events


def test_decoder_frames_split_anywhere():
    stream = (
        b"boot\r\n"
        + improv.frame(improv.TYPE_CURRENT_STATE, b"\x04")
        + b"\n"
        + improv.rpc_result(improv.CMD_DEVICE_INFO, ["Twomes", "1.0.0", "ESP32", "TWOMES-D3AD48"])
        + b"\r\n"
        + b"IMPROVEMENT is not a frame\n"
        + improv.frame(improv.TYPE_RPC_RESULT, b"\x01\x0a\x09http://\n/")
        + b"\nend\n"
    )
    whole = _decode_all([stream])
    byte_by_byte = _decode_all([stream[i : i + 1] for i in range(len(stream))])
    assert whole == byte_by_byte
    kinds = [(e.kind, e.text or e.frame.describe()) for e in whole]
    assert kinds == [
        ("line", "boot"),
        ("improv", "state: provisioned"),
        ("improv", "result (device info): Twomes, 1.0.0, ESP32, TWOMES-D3AD48"),
        ("line", "IMPROVEMENT is not a frame"),
        ("improv", "result (send Wi-Fi settings): http://\n/"),
        ("line", "end"),
    ]


def test_decoder_bad_checksum_and_truncated_frame():
    bad = bytearray(improv.frame(improv.TYPE_ERROR_STATE, b"\x03"))
    bad[-1] ^= 0xFF
    ev = _decode_all([bytes(bad) + b"\n"])
    assert ev[0].frame.describe().startswith("frame with a bad checksum")
    dec = monitor.ConsoleDecoder()
    assert dec.feed(b"IMPROV\x01\x04\x20abc") == []  # waits for the rest
    assert dec.flush(idle=0.3) == []  # a frame is given longer
    assert dec.flush(idle=2)[0].text == "IMPROV\\x01\\x04 abc"  # then shown as text


def test_improv_reference_example_and_wifi_password_never_shown():
    assert (
        improv.rpc_command(improv.CMD_CURRENT_STATE).hex(" ").upper() == "49 4D 50 52 4F 56 01 03 02 02 00 E5"
    )
    f, end = improv.parse_at(improv.wifi_settings("HomeNet", "s3cret-pass"), 0)
    assert f is not None and f.describe() == "command: send Wi-Fi settings: ssid 'HomeNet', password ***"
    scan_end = improv.parse_at(improv.rpc_result(improv.CMD_SCAN, []), 0)[0]
    assert scan_end.describe() == "result (scanned networks): end of list"


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        ('{"session_token":"Mw.abcdefghijKLMNOPQRST0123456789"}', '{"session_token":"***"}'),
        ("wifi_pass=hunter22 ok", "wifi_pass=*** ok"),
        ("WiFi password: correct horse", "WiFi password: *** horse"),
        ("psk='abc def'", "psk='***'"),
        ("token: Mw.abcdefghijKLMNOPQRST0123456789", "token: ***"),
        ("got Mw.abcdefghijKLMNOPQRST0123456789 back", "got *** back"),
        ("Authorization: Bearer abcdef123456", "Authorization: Bearer ***"),
        (
            '{"name":"TWOMES-D3AD48","device_type":"Generic-Test","activation_token":"1234567890123456"}',
            '{"name":"TWOMES-D3AD48","device_type":"Generic-Test","activation_token":"1234567890123456"}',
        ),
        ("AP TWOMES-D3AD48 ap_password=abcdefghjk", "AP TWOMES-D3AD48 ap_password=abcdefghjk"),
        ("AP password: abcdefghjk", "AP password: abcdefghjk"),
        (
            "[   0.001] setup: access point TWOMES-D3AD48, password x4k87j97p9",
            "[   0.001] setup: access point TWOMES-D3AD48, password x4k87j97p9",
        ),
        (
            "import twomes.identity from lib/twomes/identity.mpy",
            "import twomes.identity from lib/twomes/identity.mpy",
        ),
        (
            "GET https://api.energietransitiewindesheim.nl/device",
            "GET https://api.energietransitiewindesheim.nl/device",
        ),
    ],
)
def test_mask_secrets(line, masked):
    assert monitor.mask_secrets(line) == masked


def test_find_activation():
    line = '{"name":"TWOMES-D3AD48","device_type":"Generic-Test","activation_token":"3375550652"}'
    assert monitor.find_activation(line) == json.loads(line)
    assert monitor.find_activation("I (123) twomes: " + line + " trailing") == json.loads(line)
    assert monitor.find_activation('{"name":"x","activation_token":"1"}') is None
    assert monitor.find_activation('{"activation_token": 5, "name": "a", "device_type": "b"}') is None


def test_keys_reach_the_board_ctrl_c_included_and_ctrl_bracket_quits(tmp_path):
    """As miniterm or `mpremote repl`: the monitor on a terminal (a pty here) sends Ctrl-C to the board,
    whose app stops into the REPL; a line typed there runs; Ctrl-] ends the monitor (exit 0)."""
    import select
    import subprocess
    import sys

    with VirtualBoard(tmp_path / "b", pty=True) as board:
        board.install_app()
        board.start()
        board.wait_for("state: portal", 60)
        master, slave = os.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "twtools.cli", "monitor", "--port", board.pty_path, "--no-qr"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        seen = b""

        def until(text: bytes) -> None:
            nonlocal seen
            deadline = time.monotonic() + 30
            while text not in seen:
                assert time.monotonic() < deadline, seen[-600:]
                if select.select([master], [], [], 0.2)[0]:
                    seen += os.read(master, 4096)

        try:
            until(b"Ctrl-] to quit")
            _wait_port_open(board.pty_path)
            os.write(master, b"\x03")
            until(b">>> ")
            os.write(master, b"print(6 * 7)\r")
            until(b"42")
            os.write(master, b"\x1d")
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(master)
        assert "KeyboardInterrupt" in "\n".join(board.lines)


def test_reset_without_modem_lines_and_soft_reset(tmp_path, capsys):
    with VirtualBoard(tmp_path / "b", pty=True) as board:
        board.install_app()
        board.start()
        board.wait_for("activation_token", 60)
        time.sleep(0.5)
        with serial_flush(board.pty_path):
            pass  # what the board printed before the monitor opened is gone, as on a real port
        argv = ["monitor", "--port", board.pty_path, "--no-input", "--no-qr", "--timeout", "4"]
        assert main([*argv, "--reset"]) == 0
        out = capsys.readouterr().out
        assert f"--reset: {board.pty_path} has no DTR/RTS lines" in out and "Traceback" not in out
        assert '"activation_token"' not in out  # not restarted
        assert main([*argv, "--soft-reset"]) == 0
        out = capsys.readouterr().out
        assert '"activation_token"' in out and "[twomes] activation line of TWOMES-D3AD48" in out
        assert board.soft_resets == 1


@contextlib.contextmanager
def serial_flush(path: str):
    """Open the port and drop what waits in it."""
    import serial

    with serial.Serial(path, 115200, timeout=0.2) as port:
        while port.read(4096):
            pass
        yield port
