"""`twomes deploy` with the real mpremote and ampy against a virtual board's serial line (a pty)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from serialboard import serial_board

from twtools import deploy as d
from twtools.cli import main

NVS = {
    "twomes": {
        "session": ["blob", b"Mw.secret-session".hex()],
        "wifi_pass": ["blob", b"hunter22".hex()],
        "fw_fails": ["i32", 2],
    },
    "other": {"keep": ["i32", 1]},
}


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def board(tmp_path):
    with serial_board(tmp_path) as b:
        yield b


def test_plan_is_a_pure_function(tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    c.write_bytes(b"C")
    local = {"lib/twomes/a.mpy": a, "lib/otaboot.mpy": b, "main.py": c}
    board = d.BoardState(
        files={
            "lib/twomes/a.mpy": _sha(a),
            "lib/twomes/old.mpy": "00",
            "lib/twomes/a.py": "11",
            "main.py": "22",
            "ota/state.json": "33",
            "data.csv": "44",
        },
        dirs=["lib", "lib/twomes", "ota"],
        config=None,
    )
    plan = d.make_plan(local, board)
    assert plan.unchanged == ["lib/twomes/a.mpy"]
    assert [dest for _, dest in plan.puts] == ["lib/otaboot.mpy", "main.py"]
    assert plan.removes == ["lib/twomes/a.py", "lib/twomes/old.mpy"]  # stale modules; nothing outside lib/
    assert plan.mkdirs == [] and plan.remove_trees == []

    erase = d.make_plan(local, board, erase=True)
    assert erase.remove_trees == ["lib", "ota"]
    assert erase.mkdirs == ["lib", "lib/twomes"]
    assert sorted(dest for _, dest in erase.puts) == ["lib/otaboot.mpy", "lib/twomes/a.mpy", "main.py"]
    assert erase.removes == [] and erase.unchanged == []

    empty = d.make_plan(local, d.BoardState({}, [], None))
    assert empty.mkdirs == ["lib", "lib/twomes"] and len(empty.puts) == 3


def test_config_arguments_are_typed_and_checked_by_the_device_rules():
    assert d.parse_config_args(["server_url=https://x.org", "heartbeat_s=60", "ap_open=yes"]) == {
        "server_url": "https://x.org",
        "heartbeat_s": 60,
        "ap_open": True,
    }
    with pytest.raises(d.DeployError, match="unknown key 'nope'.*server_url"):
        d.parse_config_args(["nope=1"])
    with pytest.raises(d.DeployError, match="not a whole number"):
        d.parse_config_args(["heartbeat_s=often"])
    with pytest.raises(d.DeployError, match="KEY=VALUE"):
        d.parse_config_args(["server_url"])
    with pytest.raises(d.DeployError, match="rejected by the device: server_url must start with http"):
        d.merge_config(None, {"server_url": "ftp://x.org"})
    with pytest.raises(d.DeployError, match="heartbeat_s out of range"):
        d.merge_config(None, {"heartbeat_s": 1})
    kept = d.merge_config('{"device_type": "X", "gone": 1}', {"heartbeat_s": 60})
    assert kept == {"device_type": "X", "heartbeat_s": 60}
    assert d.merge_config('{"device_type": "X"}', {}, fresh=True) == {}


def test_deploy_end_to_end_with_mpremote(board, tmp_path, capsys):
    fs = board.fs
    (fs / "lib" / "twomes").mkdir(parents=True)
    (fs / "lib" / "twomes" / "gone.mpy").write_bytes(b"old module")  # from an older version
    (fs / "data.csv").write_text("user file\n")  # outside lib/: never touched
    out = tmp_path / "build"
    argv = [
        "deploy",
        "--port",
        board.pty_path,
        "--no-reset",
        "--config",
        "server_url=https://twomes.example.org",
    ]

    assert (
        d.deploy(board.pty_path, argv[5:], reset=False, out=out) == 0
    )  # mpremote default: soft reset on connect
    first = capsys.readouterr().out
    n = len(list((out / "lib").rglob("*.mpy"))) + 3  # modules, boot.py, main.py, twomes.json
    assert f"{n} files to bring up to date (mpremote skips what the board has), 1 to remove" in first
    assert f"{n} copied, 0 already up to date, 1 removed" in first
    assert f"board is up to date: {n} files checked by sha256" in first
    assert board.soft_resets >= 1  # mpremote soft-reset the "board"
    assert not (fs / "lib" / "twomes" / "gone.mpy").exists()
    assert (fs / "data.csv").exists()
    for p in (out / "lib").rglob("*.mpy"):
        assert (fs / "lib" / p.relative_to(out / "lib")).read_bytes() == p.read_bytes()
    assert (fs / "main.py").read_bytes() == (d.REPO / "main.py").read_bytes()
    assert json.loads((fs / "twomes.json").read_text()) == {"server_url": "https://twomes.example.org"}

    # again: nothing to copy; a config change copies one file and keeps the other keys
    assert main(argv[:4] + ["--no-soft-reset"]) == 0
    assert f"0 copied, {n} already up to date, 0 removed" in capsys.readouterr().out  # mpremote's check
    assert main(argv[:4] + ["-c", "heartbeat_s=60"]) == 0
    assert f"1 copied, {n - 1} already up to date" in capsys.readouterr().out
    assert json.loads((fs / "twomes.json").read_text()) == {
        "server_url": "https://twomes.example.org",
        "heartbeat_s": 60,
    }


def test_deploy_erase_clears_app_files_and_nvs(board, tmp_path, capsys):
    (board.state / "nvs.json").write_text(json.dumps(NVS))
    (board.fs / "ota" / "a").mkdir(parents=True)
    (board.fs / "ota" / "state.json").write_text('{"slot": "a", "state": "valid"}')
    (board.fs / "ota" / "a" / "x.mpy").write_bytes(b"x")
    (board.fs / "twomes.json").write_text('{"device_type": "Old-Type", "heartbeat_s": 60}')
    rc = main(
        ["deploy", "--port", board.pty_path, "--no-reset", "--erase", "-c", "server_url=http://127.0.0.1:9"]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "erased 3 stored value(s) from NVS namespace 'twomes'" in out
    # the old bundle slot is gone (boot.py, run again by mpremote's soft resets, may start a fresh ota/)
    assert not (board.fs / "ota" / "a").exists()
    nvs = json.loads((board.state / "nvs.json").read_text())
    assert nvs.get("twomes", {}) == {} and nvs["other"] == {"keep": ["i32", 1]}  # only the app's namespace
    # the config is not a secret: kept, with the change
    assert json.loads((board.fs / "twomes.json").read_text()) == {
        "device_type": "Old-Type",
        "heartbeat_s": 60,
        "server_url": "http://127.0.0.1:9",
    }
    assert (board.fs / "lib" / "twomes" / "store.mpy").exists()
    assert (
        main(["deploy", "--port", board.pty_path, "--no-reset", "--fresh-config", "-c", "heartbeat_s=90"])
        == 0
    )
    assert json.loads((board.fs / "twomes.json").read_text()) == {"heartbeat_s": 90}


def test_deploy_via_ampy(board, tmp_path, capsys):
    out = tmp_path / "build"
    local = d.build_local(out, {"server_url": "http://10.0.0.1"})
    for dest, src in local.items():  # the board already has the app; ampy brings one change and a removal
        (board.fs / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, board.fs / dest)
    (board.fs / "lib" / "twomes" / "wifi.mpy").write_bytes(b"damaged")
    (board.fs / "lib" / "twomes" / "stale.py").write_text("x = 1\n")
    rc = main(["deploy", "--port", board.pty_path, "--no-reset", "--via", "ampy"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "via ampy" in text and f"1 to copy, {len(local) - 1} unchanged, 1 to remove" in text
    assert (board.fs / "lib" / "twomes" / "wifi.mpy").read_bytes() == (
        out / "lib" / "twomes" / "wifi.mpy"
    ).read_bytes()
    assert not (board.fs / "lib" / "twomes" / "stale.py").exists()


def test_deploy_errors_in_plain_words(board, tmp_path, capsys):
    assert main(["deploy", "--port", str(tmp_path / "ttyNOPE"), "--no-reset"]) == 2
    assert "ttyNOPE does not exist: is the board plugged in?" in capsys.readouterr().err
    from twtools.ports import open_serial

    holder = open_serial(board.pty_path)  # e.g. a `twomes monitor` still running
    try:
        assert main(["deploy", "--port", board.pty_path, "--no-reset"]) == 2
        assert "is busy: another program has it open" in capsys.readouterr().err
    finally:
        holder.close()
    assert main(["deploy", "--port", "/dev/null", "-c", "colour=blue"]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err


def test_deploy_puts_the_ca_and_the_release_keys(board, tmp_path, capsys):
    from twtools import keys, tls

    certs = tls.make_test_certs(tmp_path / "certs")
    old = keys.new_key(tmp_path / "old.key")
    new = keys.new_key(tmp_path / "new.key")
    out = tmp_path / "build"
    assert (
        d.deploy(
            board.pty_path,
            [],
            reset=False,
            out=out,
            ca=str(certs["ca_pem"]),  # PEM given: the board gets DER
            release_keys=[old, str(tmp_path / "new.key.pub")],
        )
        == 0
    )
    assert (board.fs / "ca.der").read_bytes() == certs["ca_der"].read_bytes()
    cfg = json.loads((board.fs / "twomes.json").read_text())
    assert cfg == {"release_keys": [old, new]}
    capsys.readouterr()
    # another ca_file name is honoured; bad input is refused in plain words before anything is copied
    assert d.deploy(board.pty_path, ["ca_file=certs.der"], reset=False, out=out, ca=str(certs["ca_der"])) == 0
    assert (board.fs / "certs.der").read_bytes() == certs["ca_der"].read_bytes()
    with pytest.raises(d.DeployError, match="not an X.509 certificate"):
        d.deploy(board.pty_path, [], reset=False, out=out, ca=str(tmp_path / "old.key.pub"))
    with pytest.raises(d.DeployError, match="64 hex digits"):
        d.deploy(board.pty_path, [], reset=False, out=out, release_keys=["abcd"])
    assert d.parse_config_args([f"release_keys={old},{new}"]) == {"release_keys": [old, new]}
