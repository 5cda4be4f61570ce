"""`twomes server ...` commands against a real server, and the server process lifecycle."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from server_helpers import Twomes, bearer

from twtools.cli import main
from twtools.server.cli import _size, activation_payload
from twtools.server.testing import ReferenceServer

BOOT_LOG = """\
I (512) wifi: mode : sta (24:0a:c4:d3:ad:48)
I (530) twomes: QR payload: {{"ver":"v1","name":"{name}","pop":"{token}","transport":"ble"}}
I (531) twomes: POST /device payload:
{{
    "name":"{name}",
    "device_type":"Generic-Test",
    "activation_token":"{token}"
}}
I (600) twomes: waiting for provisioning
"""


def run(capsys: pytest.CaptureFixture[str], server: ReferenceServer, *args: str) -> tuple[int, str, str]:
    code = main(["server", args[0], "--url", server.url, "--admin-token", server.admin_token, *args[1:]])
    out, err = capsys.readouterr()
    return code, out, err


def test_register_from_json_text(
    capsys: pytest.CaptureFixture[str], server: ReferenceServer, tw: Twomes
) -> None:
    name = tw.new_name()
    payload = json.dumps(
        {"name": name, "device_type": "Generic-Test", "activation_token": "1386683306123456"}
    )
    assert run(capsys, server, "register", payload) == (0, f"registered {name} (Generic-Test)\n", "")
    code, out, err = run(capsys, server, "register", payload)
    assert (code, out, err) == (1, "", "error: Device name already in use\n")


def test_register_from_a_boot_log(
    capsys: pytest.CaptureFixture[str], server: ReferenceServer, tw: Twomes, tmp_path: Path
) -> None:
    name, token = tw.new_name(), tw.new_activation_token()
    log = tmp_path / "boot.log"
    log.write_text(BOOT_LOG.format(name=name, token=token))
    code, out, _ = run(capsys, server, "register", str(log), "--json")
    assert code == 0
    assert json.loads(out)["name"] == name
    # It really is that device: its token activates once attached.
    tw.http.post(f"/admin/devices/{name}/attach", json={"account_id": tw.account()[0]}, headers=tw.admin)
    assert tw.http.post("/device/activate", json={"activation_token": token}).status_code == 200


def test_register_from_stdin(
    capsys: pytest.CaptureFixture[str], server: ReferenceServer, tw: Twomes, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = tw.new_name()
    payload = {"name": name, "device_type": "Generic-Test", "activation_token": tw.new_activation_token()}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(payload)))
    assert run(capsys, server, "register", "-")[0] == 0
    assert tw.device(name)["state"] == "registered"


def test_register_errors(
    capsys: pytest.CaptureFixture[str], server: ReferenceServer, tw: Twomes, tmp_path: Path
) -> None:
    bad = json.dumps({"name": "TWOMES-d3ad48", "device_type": "Generic-Test", "activation_token": "1234"})
    code, _, err = run(capsys, server, "register", bad)
    assert code == 1
    assert err.startswith("error: name: String should match pattern")
    assert "activation_token: String should have at least 8 characters" in err
    code, _, err = run(capsys, server, "register", str(tmp_path / "missing.log"))
    assert code == 1 and err.startswith("error: ") and "missing.log" in err
    (tmp_path / "noise.log").write_text("nothing to see\n{broken json\n")
    code, _, err = run(capsys, server, "register", str(tmp_path / "noise.log"))
    assert code == 1 and "no JSON object" in err
    unknown = json.dumps(
        {"name": tw.new_name(), "device_type": "Nope", "activation_token": "1234567812345678"}
    )
    assert run(capsys, server, "register", unknown)[1:] == ("", 'error: Unknown device type "Nope"\n')


def test_activation_payload_picks_the_registration_json() -> None:
    text = BOOT_LOG.format(name="TWOMES-D3AD48", token="3375550652123456")
    assert activation_payload(text) == {
        "name": "TWOMES-D3AD48",
        "device_type": "Generic-Test",
        "activation_token": "3375550652123456",
    }


def test_account_and_attach(capsys: pytest.CaptureFixture[str], server: ReferenceServer, tw: Twomes) -> None:
    code, out, _ = run(capsys, server, "account", "Family Jansen")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("account ") and lines[0].endswith("'Family Jansen'")
    account_id = int(lines[0].split()[1])
    account_token = lines[1].removeprefix("session token: ")
    dev = tw.register()
    r = tw.http.post(
        "/account/device/activate",
        json={"activation_token": dev.activation_token},
        headers=bearer(account_token),
    )
    assert r.status_code == 200
    assert tw.device(dev.name)["account_id"] == account_id

    other = tw.register()
    assert run(capsys, server, "attach", other.name, "--account-id", str(account_id)) == (
        0,
        f"attached {other.name} to account {account_id}\n",
        "",
    )
    third = tw.register()
    code, out, _ = run(capsys, server, "attach", third.name)  # a new owner account
    assert code == 0
    new_account = tw.device(third.name)["account_id"]
    assert new_account not in (None, account_id)
    assert out == f"attached {third.name} to account {new_account}\n"
    assert run(capsys, server, "attach", third.name, "--account-id", str(account_id))[1:] == (
        "",
        "error: Device already activated\n",
    )


def test_publish_target_and_devices(
    capsys: pytest.CaptureFixture[str], server: ReferenceServer, tw: Twomes, tmp_path: Path
) -> None:
    fw = tmp_path / "app.tar"
    fw.write_bytes(os.urandom(5000))
    dev = tw.provision()
    code, out, _ = run(
        capsys, server, "publish", str(fw), "--version", "7.0.0", "--kind", "bundle", "--target"
    )
    assert code == 0, out
    assert out.startswith("published release ")
    release_id = int(out.split()[2].rstrip(":"))
    assert f"target of Generic-Test: release {release_id}" in out
    assert tw.http.get("/device/firmware/target", headers=dev.headers).json()["release"]["id"] == release_id

    code, _, err = run(capsys, server, "publish", str(fw), "--version", "7.0.0", "--kind", "bundle")
    assert (code, err) == (
        1,
        'error: Release version "7.0.0" already exists for device type "Generic-Test"\n',
    )
    code, _, err = run(
        capsys, server, "publish", str(tmp_path / "nope.bin"), "--version", "7.0.1", "--kind", "image"
    )
    assert code == 1 and "no such file" in err

    code, out, _ = run(capsys, server, "publish", str(fw), "--version", "7.0.1", "--kind", "image", "--json")
    second = json.loads(out)
    assert run(capsys, server, "target", "--release-id", str(second["id"]), "--device", dev.name)[0] == 0
    assert tw.device(dev.name)["target"]["id"] == second["id"]
    assert run(capsys, server, "target", "--clear", "--device", dev.name)[0] == 0
    assert run(capsys, server, "target", "--clear", "--device-type", "Generic-Test")[0] == 0
    assert tw.device(dev.name)["target"] is None
    assert run(capsys, server, "target", "--release-id", "999999", "--device", dev.name)[1:] == (
        "",
        "error: Release not found\n",
    )

    code, out, _ = run(capsys, server, "devices")
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["NAME", "TYPE", "STATE"]
    assert any(line.startswith(dev.name) and "activated" in line for line in out.splitlines())
    code, out, _ = run(capsys, server, "devices", "--json")
    assert dev.name in [d["name"] for d in json.loads(out)]
    code, out, _ = run(capsys, server, "releases")
    assert code == 0 and "7.0.1" in out
    code, out, _ = run(capsys, server, "device", dev.name)
    assert code == 0 and json.loads(out)["name"] == dev.name


def test_measurements_rename_and_token(
    capsys: pytest.CaptureFixture[str], server: ReferenceServer, tw: Twomes
) -> None:
    dev = tw.provision()
    body = {
        "upload_time": 1795348843,
        "property_measurements": [
            {"property_name": "heartbeat", "measurements": [{"timestamp": 1795348243, "value": "1"}]}
        ],
    }
    tw.http.post("/device/measurements/variable-interval", json=body, headers=dev.headers)
    code, out, _ = run(capsys, server, "measurements", dev.name)
    assert (code, out.split()) == (0, ["2026-11-22T11:50:43Z", "heartbeat", "1"])

    assert run(capsys, server, "rename", dev.name, f"{dev.name}-OLD") == (
        0,
        f"renamed {dev.name} to {dev.name}-OLD\n",
        "",
    )
    assert run(capsys, server, "rename", "TWOMES-NOPE00", tw.new_name())[1:] == (
        "",
        "error: Device not found\n",
    )

    code, out, _ = run(capsys, server, "token")
    assert code == 0
    assert tw.http.get("/admin/devices", headers=bearer(out.strip())).status_code == 200


def test_url_and_token_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    server: ReferenceServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("TWOMES_URL", server.url)
    monkeypatch.setenv("TWOMES_ADMIN_TOKEN", server.admin_token)
    assert main(["server", "devices", "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)
    monkeypatch.delenv("TWOMES_ADMIN_TOKEN")
    assert main(["server", "devices"]) == 1
    assert "no admin token" in capsys.readouterr().err
    token_file = tmp_path / "token"
    token_file.write_text(server.admin_token + "\n")
    assert main(["server", "devices", "--admin-token-file", str(token_file)]) == 0
    capsys.readouterr()
    assert main(["server", "devices", "--admin-token", "MQ.wrong"]) == 1
    assert capsys.readouterr().err == "error: Invalid admin session token\n"


def test_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["server", "devices", "--url", f"http://127.0.0.1:{port}", "--admin-token", "x.y"]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot talk to the server at http://127.0.0.1:{port}")


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])
def test_run_refuses_non_loopback_hosts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, host: str
) -> None:
    db = tmp_path / "db.sqlite3"
    assert main(["server", "run", "--host", host, "--db", str(db), "--files", str(tmp_path / "f")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: refusing to listen on {host}") and "--allow-remote" in err
    assert not db.exists()


def test_size_argument() -> None:
    assert _size("1024") == 1024
    assert _size("128M") == _size("128MiB") == 128 * 1024 * 1024
    assert _size("2k") == 2048


def test_first_start_prints_token_and_restart_keeps_data(tmp_path: Path) -> None:
    with ReferenceServer(tmp_path / "srv") as srv:
        srv.client.create_account("kept")
        first_url = srv.url
        srv.restart()
        assert srv.client.devices() == []  # the admin token from the first start still works
        log = srv.log_text()
        assert log.count("admin token: ") == 1
        assert f"Twomes reference server: {first_url}" in log
        assert f"Twomes reference server: {srv.url}" in log
        assert (tmp_path / "srv" / "admin-token").stat().st_mode & 0o077 == 0
    assert (tmp_path / "srv" / "twomes.sqlite3").exists()  # a caller's workdir is kept


def _alive(pid: int) -> bool:
    """Running (a zombie left for a non-reaping init counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_server_exits_when_its_parent_dies(tmp_path: Path) -> None:
    """The test harness never leaves a server behind, even if the process that started it is killed."""
    launcher = (
        "import subprocess, sys, os\n"
        "cmd = [sys.executable, '-m', 'twtools.server', 'run', '--port', '0', '--db', sys.argv[1],\n"
        "       '--files', sys.argv[2], '--watch-parent', str(os.getpid())]\n"
        "p = subprocess.Popen(cmd, stdout=open(sys.argv[3], 'wb'), stderr=subprocess.STDOUT)\n"
        "print(p.pid, flush=True)\n"
        "import time\n"
        "deadline = time.time() + 20\n"
        "while time.time() < deadline and b'Twomes reference server' not in open(sys.argv[3], 'rb').read():\n"
        "    time.sleep(0.05)\n"
    )
    log = tmp_path / "server.log"
    out = subprocess.run(
        [sys.executable, "-c", launcher, str(tmp_path / "db"), str(tmp_path / "files"), str(log)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pid = int(out.stdout.strip())
    url = log.read_text().split("Twomes reference server: ")[1].split()[0]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("server outlived its parent")
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/openapi.json", timeout=2)


def test_module_entry_point_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "twtools.server", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for command in (
        "run",
        "openapi",
        "register",
        "account",
        "attach",
        "publish",
        "target",
        "devices",
        "rename",
        "token",
    ):
        assert command in out


def test_run_on_a_busy_port_creates_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        db = tmp_path / "db.sqlite3"
        assert (
            main(["server", "run", "--port", str(port), "--db", str(db), "--files", str(tmp_path / "f")]) == 1
        )
    assert capsys.readouterr().err.startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert not db.exists()  # so the first admin token is printed on the next, successful, start


def test_run_rejects_a_foreign_database(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "other.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    assert main(["server", "run", "--port", "0", "--db", str(db), "--files", str(tmp_path / "f")]) == 1
    assert "not a Twomes reference server one" in capsys.readouterr().err


def test_token_and_account_commands(
    capsys: pytest.CaptureFixture[str], server: ReferenceServer, tw: Twomes, tmp_path: Path
) -> None:
    code, out, _ = run(capsys, server, "token")
    assert code == 0
    other = out.strip()
    code, out, _ = run(capsys, server, "tokens", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["current"] for r in rows].count(True) == 1
    assert other not in out and server.admin_token not in out
    mine = next(r["id"] for r in rows if r["current"])
    newest = max(r["id"] for r in rows)
    code, out, err = run(capsys, server, "revoke-token", str(mine))
    assert (code, err) == (1, "error: Cannot revoke the token used for this request\n")
    code, out, _ = run(capsys, server, "revoke-token", str(newest))
    assert code == 0 and out.startswith(f"admin token {newest} revoked (")
    assert main(["server", "devices", "--url", server.url, "--admin-token", other]) == 1
    assert "Invalid admin session token" in capsys.readouterr().err
    code, out, _ = run(capsys, server, "tokens")
    assert code == 0 and "(this one)" in out

    account_id, _ = tw.account("cli owner")
    code, out, _ = run(capsys, server, "accounts")
    assert code == 0 and "cli owner" in out
    code, out, _ = run(capsys, server, "revoke-account-token", str(account_id))
    assert code == 0 and out.startswith(f"session token of account {account_id} revoked (")
    code, out, _ = run(capsys, server, "renew-account-token", str(account_id))
    assert code == 0 and "session token: " in out
    code, out, err = run(capsys, server, "revoke-account-token", "999999")
    assert (code, err) == (1, "error: Account not found\n")

    # The admin client downloads any release, targeted or not.
    rel = tw.publish(b"a draft for the admin", "cli-draft-1")
    target = tmp_path / "draft.bin"
    assert server.client.download(rel["id"], target) == len(b"a draft for the admin")
    assert target.read_bytes() == b"a draft for the admin"
