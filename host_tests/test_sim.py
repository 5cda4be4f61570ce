"""`make sim`: the whole story on a virtual board against a real server, as a newcomer runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sim_story_passes_and_leaks_no_secret() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "twtools.cli", "sim"], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert re.search(r"\[sim\] all \d+ steps passed", out)
    for step in (
        "activation line",
        "registers",
        "attaches",
        "portal",
        "activates",
        "reboot",
        "confirms",
        "First upload",
        "Long button press",
        "Re-provisioned",
    ):
        assert step in out, step
    # no Wi-Fi password and no session token anywhere in what the run printed
    from twtools.sim import HOME, OFFICE

    for secret in (HOME["password"], OFFICE["password"]):
        assert secret not in out
    assert "session_token" not in out
    assert not re.search(r"Bearer [A-Za-z0-9_-]+\.", out)


def test_sim_against_a_plain_twomes_server(tmp_path: Path) -> None:
    """`twomes sim --server URL` works with any Twomes v1 server: here the reference server without its
    firmware and admin APIs. The owner attaches with the Twomes account API; the update steps are
    skipped with a clear line; the device keeps its version without confirmation and runs."""
    from twtools.server.testing import ReferenceServer

    with ReferenceServer(tmp_path / "server", plain_twomes=True, access_log=False) as srv:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "twtools.cli",
                "sim",
                "--server",
                srv.url,
                "--admin-token",
                srv.admin_token,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert re.search(r"\[sim\] all \d+ steps passed", out)
    assert "a plain Twomes server: no firmware API" in out and "Twomes account API" in out
    assert "skipped, the server has no firmware API" in out
    assert "kept without confirmation: the server has no firmware API" in out
