"""`twomes provision` against a virtual board's portal (JSON API) and over Improv serial (a pty)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from vportal import APP_HEAP, CAFE, SPECIAL_PW, start_board

from twtools import provision
from twtools.vboard.runner import VirtualBoard, free_port


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = provision.main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_portal_joined(portal_board: VirtualBoard, capsys: pytest.CaptureFixture[str]) -> None:
    url = portal_board.portal_url
    code, out = _run(capsys, "--portal", url, "--ssid", CAFE, "--password", SPECIAL_PW, "--name", "Hall")
    assert code == 0 and f"joined {CAFE}" in out, out
    assert SPECIAL_PW not in out


def test_portal_not_joined_in_plain_words(
    portal_board: VirtualBoard, capsys: pytest.CaptureFixture[str]
) -> None:
    url = portal_board.portal_url
    code, out = _run(capsys, "--portal", url, "--ssid", "home", "--password", "not-the-one")
    assert code == 1 and "did not accept the password" in out, out
    code, out = _run(capsys, "--portal", url, "--ssid", "elsewhere", "--password", "whatever1")
    assert code == 1 and "no network called elsewhere" in out, out


def test_bad_input_and_no_device(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "--portal", "http://127.0.0.1:9", "--ssid", "home", "--password", "short")
    assert code == 2 and "8 to 63" in out
    code, out = _run(
        capsys, "--portal", f"http://127.0.0.1:{free_port()}", "--ssid", "home", "--password", ""
    )
    assert code == 2 and "no answer from the device" in out


@pytest.fixture(scope="module")
def pty_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualBoard]:
    vb = start_board(Path(tmp_path_factory.mktemp("improv-board")), pty=True)
    try:
        yield vb
    finally:
        vb.stop()


def test_improv_serial(pty_board: VirtualBoard, capsys: pytest.CaptureFixture[str]) -> None:
    assert pty_board.pty_path
    code, out = _run(capsys, "--serial", pty_board.pty_path, "--ssid", "home", "--password", "wrong-password")
    assert code == 1 and "could not connect to home" in out, out
    code, out = _run(capsys, "--serial", pty_board.pty_path, "--ssid", CAFE, "--password", SPECIAL_PW)
    assert code == 0 and f"joined {CAFE}" in out, out


def test_registers_as_twomes_subcommand_and_reads_password_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse
    import io

    from twtools import cli

    assert "twtools.provision" in cli._MODULES
    parser = argparse.ArgumentParser(prog="twomes")
    provision.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["provision", "--portal", "http://127.0.0.1:9", "--ssid", "home", "--password", "-"]
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert args.func(args) == 2 and "8 to 63" in capsys.readouterr().err  # read from stdin, checked locally


def test_improv_serial_with_the_real_app_in_the_default_heap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The app's own controller behind Improv, in the virtual board's default heap (Improv's code comes
    on top of the portal's while a join runs)."""
    vb = start_board(tmp_path / "board", pty=True, heap=APP_HEAP, app=True)
    try:
        assert vb.pty_path
        code, out = _run(capsys, "--serial", vb.pty_path, "--ssid", "home", "--password", "wrong-password")
        assert code == 1 and "could not connect to home" in out, out
        code, out = _run(capsys, "--serial", vb.pty_path, "--ssid", CAFE, "--password", SPECIAL_PW)
        assert code == 0 and f"joined {CAFE}" in out, out
    finally:
        vb.stop()
