"""`twomes repurpose`: name check on the board, NAME -> NAME-OLD on a real reference server, erase and
deploy with real mpremote on the unix port (the registration step is covered by the monitor tests)."""

from __future__ import annotations

import json

import pytest
from serialboard import serial_board

from twtools.cli import main
from twtools.server.testing import ReferenceServer

NAME = "TWOMES-C0FFEE"


@pytest.fixture
def server():
    with ReferenceServer() as s:
        yield s


def _register(server, name, token):
    server.client.register_device({"name": name, "device_type": "Generic-Test", "activation_token": token})


def _repurpose(server, board, name, admin_token=None):
    """`twomes repurpose NAME` against the server and the board's serial line (no registration)."""
    token = server.admin_token if admin_token is None else admin_token
    args = ["--server", server.url, "--admin-token", token, "--port", board.pty_path, "--no-register"]
    return main(["repurpose", name, *args])


def test_repurpose_renames_erases_and_deploys(tmp_path, server, capsys):
    _register(server, NAME, "1111111111111111")
    _register(server, NAME + "-OLD", "2222222222222222")  # repurposed once before
    with serial_board(tmp_path, mac="24:6F:28:C0:FF:EE") as board:
        (board.state / "nvs.json").write_text(
            json.dumps(
                {"twomes": {"act_token": ["blob", b"1111111111111111".hex()], "session": ["blob", "00"]}}
            )
        )
        (board.fs / "twomes.json").write_text(json.dumps({"server_url": server.url}))
        rc = _repurpose(server, board, NAME)
        out = capsys.readouterr().out
        assert rc == 0, out
        assert "yes: MAC 24:6F:28:C0:FF:EE" in out
        assert f"{NAME} is now {NAME}-OLD-2" in out
        assert "erased 2 stored value(s)" in out
        assert f"twomes monitor --port {board.pty_path} --reset --register {server.url}" in out
        names = sorted(d["name"] for d in server.client.devices())
        assert names == [NAME + "-OLD", NAME + "-OLD-2"]
        assert json.loads((board.state / "nvs.json").read_text()).get("twomes", {}) == {}
        assert (board.fs / "lib" / "twomes" / "identity.mpy").exists()
        assert json.loads((board.fs / "twomes.json").read_text()) == {"server_url": server.url}  # config kept


def test_repurpose_refuses_another_board_and_unknown_name(tmp_path, server, capsys):
    _register(server, NAME, "1111111111111111")
    with serial_board(tmp_path, mac="24:6F:28:AB:CD:EF") as board:
        rc = _repurpose(server, board, NAME)
        err = capsys.readouterr().err
        assert rc == 2
        assert f"the board on {board.pty_path} is TWOMES-ABCDEF (MAC 24:6F:28:AB:CD:EF), not {NAME}" in err
        assert [d["name"] for d in server.client.devices()] == [NAME]  # nothing renamed

        rc = _repurpose(server, board, "TWOMES-ABCDEF")
        assert rc == 2
        assert "TWOMES-ABCDEF is not on the server" in capsys.readouterr().err

        rc = _repurpose(server, board, "TWOMES-ABCDEF", admin_token="nope")
        assert rc == 2
        assert "rejected the admin token" in capsys.readouterr().err
