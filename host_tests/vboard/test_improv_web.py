"""ESP Web Tools' own Improv library (npm improv-wifi-serial-sdk, pinned in host_tests/improv_web) on
the virtual board's serial line, driven from Node through a Web Serial stand-in over the pty: in setup
mode it provisions Wi-Fi; after the restart the running app answers "provisioned" with the device's
URL, the same device info, refuses new Wi-Fi settings, and a lone Ctrl-C still reaches the REPL."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import serial

from twtools import REPO, provision
from twtools.vboard.runner import VirtualBoard

WEB = REPO / "host_tests" / "improv_web"
AIR = [
    {"ssid": "home", "password": "secret-pass", "rssi": -52, "join_ms": 300},
    {"ssid": "other", "password": "other-pass", "rssi": -70},
]


def _sdk(port: str, *provision: str) -> dict:
    if shutil.which("node") is None or not (WEB / "node_modules" / "improv-wifi-serial-sdk").is_dir():
        pytest.skip(
            "node or the pinned npm packages are missing: run `make npm-deps` (npm ci in host_tests/improv_web)"
        )
    r = subprocess.run(
        ["node", str(WEB / "improv.mjs"), port, *provision],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=WEB,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_esp_web_tools_improv_in_setup_mode_and_while_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vb = VirtualBoard(tmp_path / "state", air=AIR, pty=True)
    vb.install_app()
    vb.start()
    try:
        vb.wait_for("state: portal", 60)
        assert vb.pty_path
        got = _sdk(vb.pty_path, "home", "secret-pass")
        assert "failed" not in got, got
        assert got["info"]["firmware"] == "twomes" and got["info"]["chipFamily"] == "unix port (linux)"
        name = got["info"]["name"]
        assert got["provisioned"] is True and got["state"] == 4, got  # PROVISIONED
        # the app restarts to go online; the running app answers Improv (no server here: it keeps
        # trying to activate, in the online phase)
        vb.wait_for("state: activating", 90)
        got = _sdk(vb.pty_path)
        assert "failed" not in got, got
        assert got["state"] == 4 and got["url"] == f"https://127.0.0.1:8443/admin/devices/{name}", got
        assert got["info"]["name"] == name and got["info"]["chipFamily"] == "unix port (linux)"
        got = _sdk(vb.pty_path, "other", "other-pass")
        assert got["provisioned"] is False and "UNKNOWN_RPC_COMMAND" in got["error"], got
        assert got["state"] == 4
        vb.wait_for("Wi-Fi settings refused while running", 10)
        assert not any("other-pass" in line for line in vb.lines)  # the password never on the console
        # the project's own tool says so before sending anything
        code = provision.main(["--serial", vb.pty_path, "--ssid", "other", "--password", "other-pass"])
        assert code == 1 and "runs already (Improv: provisioned)" in capsys.readouterr().out
        # a lone Ctrl-C still stops the running app: MicroPython's REPL
        with serial.Serial(vb.pty_path, 115200, timeout=0.2) as port:
            time.sleep(0.3)
            port.write(b"\x03")
            deadline, out = time.monotonic() + 30, b""
            while b">>> " not in out and time.monotonic() < deadline:
                out += port.read(256)
            assert b">>> " in out and b"KeyboardInterrupt" in out, out[-400:]
    finally:
        vb.stop()
