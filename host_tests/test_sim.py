"""`make sim`: the whole story on a virtual board against a real server, as a newcomer runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def _portal_answering(answers: list[tuple[int, bytes]]) -> tuple[str, Any]:
    """A portal stand-in on 127.0.0.1 that gives `answers` in turn (the last one again and again)."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            status, body = answers.pop(0) if len(answers) > 1 else answers[0]
            self.send_response(status)
            self.send_header("Retry-After", "1" if status == 503 else "0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def test_the_phone_asks_a_busy_portal_again_and_names_what_it_got_instead() -> None:
    import time

    import httpx
    import pytest

    from twtools.sim import StepFailed, _portal_get

    # "come again" twice, then the answer: taken after the Retry-After pauses
    url, server = _portal_answering(
        [(503, b""), (503, b'{"error": "busy, try again"}'), (200, b'{"name": "X"}')]
    )
    try:
        with httpx.Client(timeout=5) as http:
            assert _portal_get(http, url + "/api/info", time.monotonic() + 10) == {"name": "X"}
    finally:
        server.shutdown()
    # still busy at the deadline, or not JSON: a step failure that says what came, not a traceback
    for answers, said in (
        ([(503, b"")], "with 503, not its JSON: an empty body"),
        ([(200, b"<p>a page</p>")], "with 200, not its JSON: <p>a page</p>"),
    ):
        url, server = _portal_answering(answers)
        try:
            with httpx.Client(timeout=5) as http, pytest.raises(StepFailed, match=re.escape(said)):
                _portal_get(http, url + "/api/info", time.monotonic() + 1.5)
        finally:
            server.shutdown()
