"""Slow and half-open clients (issue #12): deadlines for the request head and body, a bound on open
connections that serves a legitimate request while thousands of half-open ones wait, and responses
nobody reads. Loopback only; bounded in count (at most 3000 sockets) and in time (seconds)."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from server_helpers import Twomes

from twtools.server.guard import ConnectionLimits
from twtools.server.testing import ReferenceServer

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
MAX_CONNECTIONS = 300
HALF_OPEN = 3000


@pytest.fixture(scope="module")
def slow_server() -> Iterator[ReferenceServer]:
    args = [
        "--header-timeout", str(HEADER_TIMEOUT),
        "--body-timeout", str(BODY_TIMEOUT),
        "--send-timeout", "1",
        "--max-connections", str(MAX_CONNECTIONS),
    ]  # fmt: skip
    with ReferenceServer(access_log=False, extra_args=args) as srv:
        yield srv


def _connect(server: ReferenceServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_all(sock: socket.socket, limit: float = 10.0) -> bytes:
    """Everything the server sends until it closes (at most ``limit`` seconds)."""
    sock.settimeout(limit)
    data = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        ConnectionLimits(max_connections=0)
    with pytest.raises(ValueError):
        ConnectionLimits(header_timeout=0)


def test_a_half_sent_request_head_gets_408_and_is_closed(slow_server: ReferenceServer) -> None:
    with _connect(slow_server) as sock:
        sock.sendall(b"POST /device/activate HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        answer = _read_all(sock)
        took = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408 ") and answer.endswith(b'{"detail": "Request timeout"}'), answer
    assert HEADER_TIMEOUT * 0.5 < took < HEADER_TIMEOUT + 5


def test_a_silent_connection_is_closed_without_an_answer(slow_server: ReferenceServer) -> None:
    with _connect(slow_server) as sock:
        start = time.monotonic()
        assert _read_all(sock) == b""
        assert time.monotonic() - start < HEADER_TIMEOUT + 5


def test_a_half_sent_body_gets_408_and_stores_nothing(slow_server: ReferenceServer) -> None:
    with _connect(slow_server) as sock:
        sock.sendall(
            b"POST /device/activate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"activation_token": '
        )
        start = time.monotonic()
        answer = _read_all(sock)
        took = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert BODY_TIMEOUT * 0.5 < took < BODY_TIMEOUT + 5


def test_a_slow_but_complete_request_within_the_deadline_is_served(slow_server: ReferenceServer) -> None:
    body = b'{"activation_token": "0000000000000000"}'
    with _connect(slow_server) as sock:
        sock.sendall(b"POST /device/activate HTTP/1.1\r\nHost: x\r\n")
        time.sleep(HEADER_TIMEOUT * 0.3)
        sock.sendall(b"Content-Type: application/json\r\nConnection: close\r\n")
        sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body))
        time.sleep(HEADER_TIMEOUT * 0.3)
        sock.sendall(body)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 404 "), answer


def test_thousands_of_half_open_connections_do_not_starve_a_legitimate_request(
    slow_server: ReferenceServer,
) -> None:
    socks: list[socket.socket] = []
    try:
        for i in range(HALF_OPEN):
            sock = _connect(slow_server)
            if i % 3 == 0:
                sock.sendall(b"GET /device HTTP/1.1\r\nHost: x\r\n")  # head never finished
            elif i % 3 == 1:
                sock.sendall(b"POST /device/activate HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
            socks.append(sock)  # i % 3 == 2: connected, silent
        start = time.monotonic()
        with httpx.Client(base_url=slow_server.url, timeout=10, trust_env=False) as http:
            r = http.get("/openapi.json")
            took = time.monotonic() - start
            assert r.status_code == 200
            assert took < 5, f"a legitimate request took {took:.1f} s among {HALF_OPEN} half-open connections"
            admin = Twomes(slow_server, http).admin
            assert http.get("/admin/devices", headers=admin).status_code == 200
        # Every half-open connection is closed by the server within the deadlines (most at once:
        # replaced by newer connections).
        deadline = time.monotonic() + BODY_TIMEOUT + 10
        open_left = list(socks)
        while open_left and time.monotonic() < deadline:
            still = []
            for sock in open_left:
                sock.setblocking(False)
                try:
                    if sock.recv(65536) == b"":
                        continue
                except BlockingIOError:
                    still.append(sock)
                    continue
                except OSError:
                    continue
                still.append(sock)  # got a 408: wait for the close
            open_left = still
            time.sleep(0.2)
        assert not open_left, f"{len(open_left)} half-open connections still open"
    finally:
        for sock in socks:
            sock.close()


def test_a_response_nobody_reads_is_given_up(slow_server: ReferenceServer, tmp_path: object) -> None:
    http = httpx.Client(base_url=slow_server.url, timeout=30, trust_env=False)
    tw = Twomes(slow_server, http)
    size = 8 * 1024 * 1024
    rel = tw.publish(os.urandom(size), "slow-reader-1")
    gave_up = "closing a connection that has not read its response for 1 s"
    before = slow_server.log_text().count(gave_up)
    with _connect(slow_server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(
            b"GET /admin/firmware/%d/image HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
            % (rel["id"], slow_server.admin_token.encode())
        )
        # We read nothing: the send timeout (1 s) runs out and the server says it gave up on us. (The
        # end of the stream cannot show it: with the 4 KB buffer the rest trickles in at ~40 KB/s, from
        # a server that gave up and from one that did not alike, so the whole file could never arrive
        # within a test's time.)
        deadline = time.monotonic() + 10
        while slow_server.log_text().count(gave_up) == before:
            assert time.monotonic() < deadline, "the server never gave up:\n" + slow_server.log_text()[-2000:]
            time.sleep(0.05)
        data = b""
        while len(data) < 100 and (chunk := sock.recv(4096)):
            data += chunk
    assert b"200 OK" in data[:100]
    assert len(data) < size, "the whole file arrived: the server never gave up"
    # The server still serves others.
    r = http.get(f"/admin/firmware/{rel['id']}/image", headers=tw.admin)
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == rel["sha256"]
    http.close()


def test_an_answer_before_the_body_is_not_followed_by_a_408(slow_server: ReferenceServer) -> None:
    # The upload route answers 401 before it reads the body; the unfinished body then times out
    # without a second answer on the connection.
    with _connect(slow_server) as sock:
        sock.sendall(
            b"POST /admin/firmware HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer MQ.wrong\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n"
        )
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 401 "), answer
    assert b"408" not in answer
