"""Verified https on the virtual board (the real firmware on the MicroPython unix port, its mbedTLS):
the server's certificate must chain to the CA deployed with the config and name the server. A
self-signed certificate, one for another name, an expired one, one from another CA, and a downgrade to
plain http are refused with one clear console line, and no request (no token) reaches the server."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from twtools import tls
from twtools.vboard.runner import VirtualBoard, free_port

NET = {"ssid": "Lab", "password": "12345678", "rssi": -50, "channel": 6, "join_ms": 30}


@contextmanager
def https_server(cert: Path | None, key: Path | None) -> Iterator[tuple[int, list[str]]]:
    """A server on 127.0.0.1 that records every request and answers 404 (not registered)."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            seen.append(self.path)
            body = b'{"detail": "No device found for provided activation token"}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if cert is not None and key is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield port, seen
    finally:
        srv.shutdown()
        srv.server_close()


def _board(tmp: Path, url: str, ca_der: Path, **config: object) -> VirtualBoard:
    b = VirtualBoard(tmp / "board", air=[NET], config={"server_url": url, "retry_base_s": 1, **config})
    b.install_app()
    (b.fs / "ca.der").write_bytes(ca_der.read_bytes())
    creds = json.dumps([NET["ssid"], NET["password"]]).encode().hex()
    (b.state / "nvs.json").write_text(json.dumps({"twomes": {"wifi": ["blob", creds]}}))
    return b


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tls.make_test_certs(tmp_path_factory.mktemp("certs"))


def test_the_right_ca_and_name_is_trusted(certs: dict[str, Path], tmp_path: Path) -> None:
    with https_server(certs["good_cert"], certs["good_key"]) as (port, seen):
        b = _board(tmp_path, f"https://127.0.0.1:{port}", certs["ca_der"])
        try:
            b.start()
            b.wait_for(r"activate: not registered on the server yet", 60)
        finally:
            b.stop()
        assert seen and seen[0] == "/device/activate"
        assert not [ln for ln in b.lines if "TLS refused" in ln]


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("self_signed", "not correctly signed by the trusted CA"),
        ("other_ca", "not correctly signed by the trusted CA"),
        ("wrong_name", "does not match"),
        ("expired", "expired"),
    ],
)
def test_a_certificate_it_cannot_trust_is_refused_and_no_token_is_sent(
    certs: dict[str, Path], tmp_path: Path, case: str, why: str
) -> None:
    with https_server(certs[f"{case}_cert"], certs[f"{case}_key"]) as (port, seen):
        b = _board(tmp_path, f"https://127.0.0.1:{port}", certs["ca_der"])
        try:
            b.start()
            first = b.wait_for(r"activate: no answer: TLS refused: (.*)", 60)
            # the activation's retry: a new connection with the phase's one TLS context, refused again
            again = b.wait_for(r"activate: no answer: TLS refused: (.*)", 30, start=b.last_index + 1)
        finally:
            b.stop()
        for m in (first, again):
            assert why in m.group(1).lower() or why in m.group(1), m.group(0)
        assert seen == []  # the handshakes failed: nothing, not even the activation token, was sent


def test_a_downgrade_to_plain_http_is_refused(certs: dict[str, Path], tmp_path: Path) -> None:
    with https_server(None, None) as (port, seen):
        b = _board(tmp_path, f"http://127.0.0.1:{port}", certs["ca_der"], allow_http=False)
        try:
            b.start()
            b.wait_for(r"activate: no answer: plain http refused", 60)
        finally:
            b.stop()
        assert seen == []
        assert not [ln for ln in b.lines if "allow_http: plain http" in ln]  # the lab switch is off


# A board's main.py that prints the heap in use (after a collection) before each request of the HTTP
# client and after each Response is closed, then starts the app as main.py does. (The client is
# patched when the online phase has loaded it: the boot unloads its own copy.)
HEAP_MAIN = """
import gc
import sys
import twomes.app

_set = twomes.app.App.set_state


def _used(what):
    gc.collect()
    print("heap in use %s %d" % (what, gc.mem_alloc()))


def _patch(http):
    _request, _close = http.request, http.Response.close

    def request(*args):
        _used("before a request")
        return _request(*args)

    async def close(self):
        await _close(self)
        _used("after a request")

    http.request = request
    http.Response.close = close


def _state(self, state, message=""):
    http = sys.modules.get("twomes.online.http")
    if http is not None and not hasattr(http, "_patched"):
        _patch(http)
        http._patched = True
    _set(self, state, message)


def _counted(make):
    def tls_context(cadata):
        print("tls context made")
        return make(cadata)

    return tls_context


twomes.app.App.set_state = _state
twomes.hw.tls_context = _counted(twomes.hw.tls_context)
twomes.app.main()
"""


def test_one_tls_context_serves_every_request_of_the_phase(certs: dict[str, Path], tmp_path: Path) -> None:
    """A TLS context is 3 KB of heap on the 64-bit unix port (docs/heap.md): the online phase makes one,
    at its start, and every connection uses it - none is made per request (at 64K a running state's
    request found no 3K piece for one), and none is left behind by one: between requests (the
    activation's retries: 404, not registered) the heap in use stays where it was after the first,
    which loaded asyncio's stream module."""
    with https_server(certs["good_cert"], certs["good_key"]) as (port, seen):
        b = _board(tmp_path, f"https://127.0.0.1:{port}", certs["ca_der"])
        (b.fs / "main.py").write_text(HEAP_MAIN)
        try:
            b.start()
            b.wait_for(r"activate: not registered on the server yet", 60)
            for _ in range(4):
                b.wait_for(r"heap in use after a request", 30, start=b.last_index + 1)
        finally:
            b.stop()
    used = [(ln.split()[3], int(ln.split()[-1])) for ln in b.lines if "heap in use " in ln]
    made = [ln for ln in b.lines if "tls context made" in ln]
    first = b.lines.index(next(ln for ln in b.lines if "heap in use before a request" in ln))
    after = [n for what, n in used if what == "after"]
    assert len(seen) >= 4 and len(after) >= 4, used
    assert len(made) == 1, made  # the server's CA check at the phase's start: one for all requests
    assert b.lines.index(made[0]) < first  # made before the first request
    # nothing grows with the requests (the second leaves 0.8K more than the first: the activation's
    # hint, its log line and the state "waiting"); a context kept per request would be 3,104 bytes each
    assert max(after) - after[0] < 1024 and max(after[1:]) - min(after[1:]) < 256, used
