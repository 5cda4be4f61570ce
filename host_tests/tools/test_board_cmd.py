"""`twomes board --state DIR` on an existing board: it applies --server and prints the address the
portal really listens on (issue: the old config's ports and server were used silently)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from twtools.vboard.runner import VirtualBoard

TWOMES = str(Path(sys.executable).parent / "twomes")


def _start(state: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [TWOMES, "board", "--state", str(state), "--heap", "256K", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"\[board\] portal (http://\S+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise AssertionError("no portal address printed")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_existing_state_applies_server_and_prints_the_real_portal(tmp_path: Path) -> None:
    state = tmp_path / "b"
    VirtualBoard(state, config={"server_url": "http://127.0.0.1:9"}).install_app()
    proc, url = _start(state, "--server", "http://127.0.0.1:8123")
    try:
        cfg = json.loads((state / "fs" / "twomes.json").read_text())
        assert cfg["server_url"] == "http://127.0.0.1:8123" and cfg["allow_http"] is True
        assert url.endswith(f":{cfg['portal_port']}")
        deadline = time.monotonic() + 30
        while True:
            try:
                info = httpx.get(url + "/api/info", timeout=2).json()
                break
            except (httpx.HTTPError, ValueError):
                assert time.monotonic() < deadline, "the printed portal never answered"
                time.sleep(0.5)
        assert info["name"] == "TWOMES-D3AD48"
    finally:
        _stop(proc)
    # again without --server: the board keeps the server it has
    proc, _ = _start(state)
    try:
        cfg = json.loads((state / "fs" / "twomes.json").read_text())
        assert cfg["server_url"] == "http://127.0.0.1:8123"
    finally:
        _stop(proc)
