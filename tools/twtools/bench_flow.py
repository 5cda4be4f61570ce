"""Flow latencies: `twomes sim --timing` (the whole story: server, portal, activation, update, reboot,
confirm, upload, button, re-provisioning) run `runs` times, each in its own process; per step its wall
time and the CPU time each party used in it (twtools.sim.Meter: the device's firmware process, the
simulated hardware's process, the reference server's process, the host side), the rest being waits
nobody computed in (deliberate and simulated: the Wi-Fi join, back-offs, timers, the device's sleeps).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PARTIES = ("device", "hardware", "server", "host", "waiting")


def run_once(timeout: float = 300) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="twomes-bench-flow-") as tmp:
        out = Path(tmp) / "timing.json"
        proc = subprocess.run(
            [sys.executable, "-m", "twtools.cli", "sim", "--quiet", "--timing", str(out)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0 or not out.exists():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            raise RuntimeError(f"`twomes sim --timing` failed (exit {proc.returncode}):\n{tail}")
        steps: list[dict[str, Any]] = json.loads(out.read_text())["steps"]
    return steps


def measure(runs: int) -> dict[str, Any]:
    """{"steps": [step text], "runs": [[per step {wall_s, device_s, ...}] per run]}"""
    all_runs = [run_once() for _ in range(runs)]
    names = [s["step"] for s in all_runs[0]]
    for r in all_runs[1:]:
        if [s["step"] for s in r] != names:
            raise RuntimeError("the sim's steps differ between runs")
    return {"steps": names, "runs": all_runs}
