"""The virtual board's serial line behaves like a chip's: the real app at the default heap, on a pty,
driven by a person's keys (Ctrl-C, the friendly REPL, paste mode, Ctrl-D) and by the ecosystem's own
tools (mpremote exec/ls/cp/run/repl/mip, ampy ls/put, `twomes deploy`)."""

from __future__ import annotations

import functools
import http.server
import os
import select
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from twtools import REPO
from twtools.cli import main
from twtools.vboard.runner import REBOOT_EXIT, VirtualBoard

BIN = Path(sys.executable).parent


@pytest.fixture
def board(tmp_path: Path) -> Iterator[VirtualBoard]:
    b = VirtualBoard(tmp_path / "state", pty=True)
    b.install_app()
    b.start()
    try:
        b.wait_for("state: portal", 60)
        yield b
    finally:
        b.stop()


_pending: dict[int, bytes] = {}


def _read_until(port: serial.Serial, text: bytes, timeout: float = 20.0) -> bytes:
    """What the board sent up to and including ``text``; the rest is kept for the next call."""
    got = _pending.pop(id(port), b"")
    deadline = time.monotonic() + timeout
    while text not in got:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} within {timeout}s; got {got[-400:]!r}")
        got += port.read(port.in_waiting or 1)
    end = got.index(text) + len(text)
    _pending[id(port)] = got[end:]
    return got[:end]


def test_keys_ctrl_c_repl_paste_soft_reset_and_machine_reset(board):
    with serial.Serial(board.pty_path, 115200, timeout=0.2) as port:
        port.write(b"\x03")  # the app stops; MicroPython's REPL takes the console
        out = _read_until(port, b">>> ", 60)
        assert b"KeyboardInterrupt" in out and b'Type "help()" for more information.' in out
        port.write(b"6*7\r")
        assert b"42" in _read_until(port, b"42")
        port.write(b"\x05")  # paste mode
        _read_until(port, b"paste mode; Ctrl-C to cancel, Ctrl-D to finish")
        port.write(b"x = 5\rif x:\r    print('pasted', x * 2)\r\x04")
        assert b"pasted 10" in _read_until(port, b"pasted 10")
        _read_until(port, b">>> ")
        assert board.serial is not None
        signals = board.serial.interrupts  # the app's Ctrl-C: a signal, or data to its Improv listener
        port.write(b"exec('while 1: pass')\r")  # code that runs: Ctrl-C interrupts it (a signal)
        time.sleep(0.5)
        port.write(b"\x03")
        assert b"KeyboardInterrupt" in _read_until(port, b">>> ")
        assert board.serial.interrupts == signals + 1
        port.write(b"import os; print(sorted(os.listdir('/')))\r")  # '/' is the board's filesystem
        assert b"'boot.py', 'lib', 'main.py'" in _read_until(port, b"'main.py'")
        boots, mark = board.boots, board.mark()
        port.write(b"\x04")  # Ctrl-D: soft reset, main.py runs again
        assert b"MPY: soft reboot" in _read_until(port, b"MPY: soft reboot")
        board.wait_for("state: portal", 60, start=mark)
        assert board.boots == boots + 1 and board.soft_resets == 1
        assert board.exit_codes[-1] == 0
        port.write(b"\x03")
        _read_until(port, b">>> ")
        mark = board.mark()
        port.write(b"import machine; machine.reset()\r")  # a hard reset, as before
        board.wait_for("state: portal", 60, start=mark)
        assert board.exit_codes[-1] == REBOOT_EXIT and board.soft_resets == 1


def _mpremote(board: VirtualBoard, *args: str, timeout: float = 60) -> str:
    r = subprocess.run(
        [str(BIN / "mpremote"), "connect", board.pty_path, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_mpremote_exec_ls_cp_run_mip(board, tmp_path):
    assert _mpremote(board, "exec", "print(6 * 7)").strip() == "42"  # stops the running app first
    listing = _mpremote(board, "ls")
    assert "main.py" in listing and "lib/" in listing
    src = tmp_path / "data.txt"
    src.write_bytes(os.urandom(3000).hex().encode())
    _mpremote(board, "cp", str(src), ":data.txt")
    assert (board.fs / "data.txt").read_bytes() == src.read_bytes()
    _mpremote(board, "cp", ":data.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_bytes() == src.read_bytes()
    script = tmp_path / "s.py"
    script.write_text("import sys\nprint('ran on', sys.platform)\n")
    assert "ran on linux" in _mpremote(board, "run", str(script))
    # mip: package.json from a package index on 127.0.0.1 (mpremote fetches, the board stores)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(REPO)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/package.json"
        _mpremote(board, "mip", "install", "--target", "/mip", url, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert (board.fs / "mip" / "twomes" / "app.py").read_bytes() == (
        REPO / "device/twomes/app.py"
    ).read_bytes()


def test_mpremote_repl_keys(board):
    master, slave = os.openpty()
    tty.setraw(slave)  # as mpremote sets its terminal: a Ctrl-C typed before it did is a key, not a signal
    proc = subprocess.Popen(
        [str(BIN / "mpremote"), "connect", board.pty_path, "repl"], stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    got = b""

    def until(text: bytes) -> None:
        nonlocal got
        deadline = time.monotonic() + 30
        while text not in got:
            assert time.monotonic() < deadline, got[-400:]
            if select.select([master], [], [], 0.2)[0]:
                got += os.read(master, 4096)

    try:
        until(b"Connected to MicroPython")
        os.write(master, b"\x03")  # Ctrl-C through mpremote's terminal reaches the board
        until(b">>> ")
        os.write(master, b"print(6 * 7)\r")
        until(b"42")
        os.write(master, b"\x1d")  # Ctrl-] leaves mpremote
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_ampy_ls_put(board, tmp_path):
    def ampy(*args: str) -> str:
        r = subprocess.run(
            [str(BIN / "ampy"), "--port", board.pty_path, *args], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    assert "/main.py" in ampy("ls").split()
    f = tmp_path / "note.txt"
    f.write_text("from ampy\n")
    ampy("put", str(f), "/note.txt")
    assert (board.fs / "note.txt").read_text() == "from ampy\n"
    assert "/note.txt" in ampy("ls").split()


def test_twomes_deploy_to_a_running_app(board, capsys):
    mark = board.mark()
    assert main(["deploy", "--port", board.pty_path, "-c", "server_url=http://127.0.0.1:9"]) == 0
    out = capsys.readouterr().out
    assert "board is up to date" in out and "board restarted" in out
    board.wait_for("state: portal", 60, start=mark)  # machine.reset(): the app runs again
    assert '"server_url": "http://127.0.0.1:9"' in (board.fs / "twomes.json").read_text()
