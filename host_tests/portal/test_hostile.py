"""Setup mode of the real app on a virtual board under attack and in crowded air (issue #17), with
figures. One board (the real app, its own controller, 30 networks with 32-byte names in the air plus
the usual ones) takes each attack in turn while a legitimate client asks for its status page and the
form. Per attack: legitimate requests answered within 5 s (a legitimate client follows a "busy, come
again" 503 as a browser or the app does, within those 5 s) >= 99%, no app crash (no traceback, no
restart), no board stop.

`make test` runs a short slice (TW_HOSTILE_S seconds per attack, TW_HOSTILE_N generated inputs per
parser); `make hostile` the full counts (10,000 inputs per parser, 30 s per attack). Run with -s to see
the figures."""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from vportal import AIR, APP_HEAP, start_board

from twtools.vboard.runner import VirtualBoard

SECONDS = float(os.getenv("TW_HOSTILE_S") or 4)
COUNT = int(os.getenv("TW_HOSTILE_N") or 300)
ANSWER_S = 5.0
CROWDED = [{"ssid": f"{i:02d}" * 16, "password": f"whatever{i}", "rssi": -45 - i} for i in range(30)] + AIR
REQ_STATE = bytes([0x49, 0x4D, 0x50, 0x52, 0x4F, 0x56, 0x01, 0x03, 0x02, 0x02, 0x00, 0xE5])
ISSUE_FRAMES = [
    b"IMPROV\x02\x03\x02\x02\x00\xe6",
    b"IMPROV\x00\x03\x02\x02\x00\xe4",
    b"IMPROV\xff\x03\x02\x02\x00\xe3",
    b"IMPROVIMPROV\x01\x03\x02\x02\x00\xe5",
]


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualBoard]:
    vb = start_board(tmp_path_factory.mktemp("hostile-board"), heap=APP_HEAP, app=True, air=CROWDED)
    try:
        yield vb
    finally:
        vb.stop()


# ---- a raw HTTP client ----------------------------------------------------------------------------
def exchange(port: int, raw: bytes, timeout: float = ANSWER_S) -> bytes:
    """Send raw bytes, read the answer until the portal closes (or the time is up); TimeoutError when
    nothing came in the time (a closed connection without an answer returns b"")."""
    data = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(raw)
        except OSError:
            pass  # closed at once (refused or evicted): the answer may still be there
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(8192)
            except TimeoutError:
                if not data:
                    raise
                break
            except OSError:
                if not data:
                    raise  # reset before any answer: the caller says so
                break
            if not chunk:
                break
            data += chunk
    return data


def well_formed(data: bytes, head: bool | None = False) -> int:
    """The status of a complete HTTP answer (0: nothing); AssertionError if it is not complete and
    valid UTF-8. `head`: a HEAD request (no body), None: either (a "busy" refusal tells HEAD by the
    first five bytes only, not by a whole request line)."""
    if not data:
        return 0
    head_raw, sep, body = data.partition(b"\r\n\r\n")
    assert sep and head_raw.startswith(b"HTTP/1.1 "), data[:300]
    lines = head_raw.decode("utf-8").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if head is None and body == b"":
        head = True
    if "content-length" in headers and not head:
        assert len(body) == int(headers["content-length"]), data[:300]
    if head:
        assert body == b"", data[:300]
    body.decode("utf-8")
    if headers.get("content-type", "").startswith("application/json") and body:
        json.loads(body)
    return status


class Legit:
    """A legitimate client: the status JSON and the form, one after the other, in its own thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.times: list[float | None] = []  # seconds to a whole 200, None: not within ANSWER_S
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _one(self, path: str) -> float | None:
        t0 = time.monotonic()
        raw = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUser-Agent: phone\r\n\r\n".encode()
        while time.monotonic() - t0 < ANSWER_S:
            try:
                data = exchange(self.port, raw, ANSWER_S - (time.monotonic() - t0))
            except OSError:
                data = b""
            if data and well_formed(data) == 200 and (path != "/" or data.endswith(b"</html>")):
                return time.monotonic() - t0
            time.sleep(0.2)  # "busy, come again" (or no answer): again, as a browser does
        return None

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            self.times.append(self._one("/" if n % 3 == 2 else "/api/status"))
            n += 1
            time.sleep(0.1)

    def __enter__(self) -> Legit:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(ANSWER_S + 2)

    def figures(self) -> tuple[int, float, float]:
        done = [t for t in self.times if t is not None]
        return len(self.times), 100.0 * len(done) / max(1, len(self.times)), max(done, default=0.0)


def attack(board: VirtualBoard, name: str, run: Callable[[threading.Event], str]) -> None:
    """Run `run` (until the event is set, SECONDS long) against the board while a legitimate client
    works; print and check the figures."""
    boots = board.boots
    mark = board.mark()
    stop = threading.Event()
    result: list[str] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            result.append(run(stop))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with Legit(board.portal_port) as legit:
        t = threading.Thread(target=go, daemon=True)
        t.start()
        time.sleep(SECONDS)
        stop.set()
        t.join(900)  # the generated inputs may take longer than SECONDS
        time.sleep(0.3)
    n, pct, worst = legit.figures()
    lines = board.lines[mark:]
    crashes = sum(1 for ln in lines if "Traceback" in ln or "unexpected error" in ln)
    restarts = board.boots - boots
    stops = 0 if board.running else 1
    print(
        f"\n{name}: {result[0] if result else '?'}; legitimate requests answered within {ANSWER_S:.0f} s: "
        f"{pct:.1f}% of {n} (slowest {worst:.2f} s); app crashes {crashes}, restarts {restarts}, "
        f"board stops {stops}"
    )
    assert not errors, errors
    assert result, "the attack did not finish"
    assert stops == 0 and crashes == 0 and restarts == 0, "\n".join(lines[-40:])
    assert n >= 3 and pct >= 99.0, (n, pct, legit.times)


# ---- the attacks ----------------------------------------------------------------------------------
def test_idle_connections(board: VirtualBoard) -> None:
    """Connections opened and never written (a phone's spare connections, 20 of them, held open)."""

    def run(stop: threading.Event) -> str:
        held: list[socket.socket] = []
        opened = 0
        while not stop.is_set():
            while len(held) < 20:
                held.append(socket.create_connection(("127.0.0.1", board.portal_port), timeout=5))
                opened += 1
            for s in list(held):  # the ones the portal closed are opened again
                s.setblocking(False)
                try:
                    if s.recv(1024) == b"":
                        held.remove(s)
                        s.close()
                except BlockingIOError:
                    pass
                except OSError:
                    held.remove(s)
                    s.close()
            time.sleep(0.05)
        for s in held:
            s.close()
        return f"{opened} idle connections opened (20 held at once)"

    attack(board, "idle connections", run)


def test_concurrent_requests(board: VirtualBoard) -> None:
    """Bursts of 200 concurrent requests; every answer must be whole."""

    def run(stop: threading.Event) -> str:
        raw = f"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1:{board.portal_port}\r\n\r\n".encode()
        counts: dict[str, int] = {}
        with ThreadPoolExecutor(200) as pool:
            while not stop.is_set():
                for data, err in pool.map(lambda _: _tried(board.portal_port, raw), range(200)):
                    key = str(well_formed(data)) if data else f"none ({err or 'closed'})"
                    counts[key] = counts.get(key, 0) + 1
        return "answers by status " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))

    attack(board, "200 concurrent requests", run)


def _tried(port: int, raw: bytes) -> tuple[bytes, str]:
    """(answer, "" or the client's error: TimeoutError - no answer within the time, also a connect still
    in the stack's SYN backoff; a reset)."""
    try:
        return exchange(port, raw, 10), ""
    except OSError as e:
        return b"", type(e).__name__


def _safe(port: int, raw: bytes) -> bytes:
    try:
        return exchange(port, raw, 10)
    except OSError:
        return b""


def test_slow_clients(board: VirtualBoard) -> None:
    """5 clients that send their request one byte every 2 s (and more as the portal closes them)."""

    def client(stop: threading.Event, got: list[int]) -> None:
        while not stop.is_set():
            raw = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{board.portal_port}\r\n\r\n".encode()
            try:
                with socket.create_connection(("127.0.0.1", board.portal_port), timeout=5) as s:
                    for b in raw:
                        if stop.wait(2.0):
                            break
                        s.sendall(bytes([b]))
                    got.append(1)
            except OSError:
                got.append(0)  # closed by the portal (evicted or too slow): as it should

    def run(stop: threading.Event) -> str:
        got: list[int] = []
        ts = [threading.Thread(target=client, args=(stop, got), daemon=True) for _ in range(5)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        return f"5 slow clients, {len(got)} connections, {got.count(0)} cut by the portal"

    attack(board, "slow clients", run)


def _fuzzed(rng: random.Random, port: int) -> bytes:
    host = f"127.0.0.1:{port}"
    bases = [
        f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(),
        f"GET /api/status HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(),
        f"HEAD /api/networks HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(),
        f"POST /connect HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: 33\r\n\r\nssid=%ED%A0%80&password=%C0%BC%FF".encode(),
        f"POST /api/wifi HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 38\r\n\r\n"
        '{"ssid": "\\ud800x", "password": "abc"}'.encode(),
        b"GET /generate_204 HTTP/1.1\r\nHost: connectivitycheck.gstatic.com\r\n\r\n",
    ]
    b = bytearray(rng.choice(bases))
    for _ in range(rng.randrange(4)):
        op = rng.randrange(5)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 1:
            b[i:i] = os.urandom(rng.randrange(1, 40))
        elif op == 2:
            del b[i : i + rng.randrange(1, 20)]
        elif op == 3:
            b[i:i] = rng.choice([b"\r\n", b"%", b"\x00", b"\xed\xa0\x80", b"Content-Length: 99999\r\n", b" "])
        else:
            b[i:i] = b"X-Pad: " + b"a" * rng.randrange(2000) + b"\r\n"
    return bytes(b)


def _is_head(raw: bytes) -> bool | None:
    """Whether the portal can tell `raw` is a HEAD request (its request line whole, in a slot's buffer);
    None: it may or may not (a request line with non-ASCII bytes: MicroPython's decoding is lenient)."""
    end = raw.find(b"\r\n")
    if end < 0 or end + 2 > 512:  # (portal._LINE)
        return False
    line = raw[:end]
    if not line.isascii():
        return None if line[:5] == b"HEAD " else False
    parts = line.decode().split(" ")
    return len(parts) == 3 and parts[0] == "HEAD" and parts[1][:1] == "/" and parts[2][:7] == "HTTP/1."


def test_fuzzed_requests(board: VirtualBoard) -> None:
    """COUNT generated requests (mutated real ones): every answer whole, UTF-8, JSON where it says so."""
    rng = random.Random(17)

    def run(stop: threading.Event) -> str:
        counts: dict[int, int] = {}
        reqs = [_fuzzed(rng, board.portal_port) for _ in range(COUNT)]

        def one(raw: bytes) -> int:
            data = _safe(board.portal_port, raw)
            head = _is_head(raw)
            return well_formed(data, head=head or (None if raw[:5] == b"HEAD " else head))

        with ThreadPoolExecutor(4) as pool:
            for st in pool.map(one, reqs):
                counts[st] = counts.get(st, 0) + 1
        return f"{COUNT} fuzzed requests, answers by status " + ", ".join(
            f"{k or 'none'}: {v}" for k, v in sorted(counts.items())
        )

    attack(board, "fuzzed requests", run)


def test_malformed_improv_frames(board: VirtualBoard) -> None:
    """The issue's frames and COUNT generated frames (any version, type, length, checksum, 0x03 bytes
    anywhere, some cut short) on the serial console: no byte of a frame is Ctrl-C, so the app never
    stops, and a state request afterwards is answered."""
    rng = random.Random(3)

    def frame(version: int, ptype: int, data: bytes, good_sum: bool) -> bytes:
        f = bytearray(b"IMPROV" + bytes([version, ptype, len(data)]) + data)
        f.append(sum(f) & 0xFF if good_sum else rng.randrange(256))
        return bytes(f)

    def run(stop: threading.Event) -> str:
        sent = 0
        for f in ISSUE_FRAMES:
            board.console_write(f)
            sent += 1
        for _ in range(COUNT):
            data = bytes(3 if rng.random() < 0.3 else rng.randrange(256) for _ in range(rng.randrange(6)))
            f = frame(
                rng.choice([1, 1, 2, 0, 255, 3, 73]), rng.choice([3, 3, 1, 2, 4, 9]), data, rng.random() < 0.5
            )
            if rng.random() < 0.9:
                board.console_write(f)
            else:  # cut short, then text that ends it (a frame claims at most 265 bytes): none of its
                board.console_write(f[: rng.randrange(len(f))] + b"\n" * 300)  # bytes is outside a frame
            sent += 1
            if sent % 500 == 0:
                time.sleep(0.05)
        time.sleep(1.2)  # a partial frame at the end is dropped after 1 s of silence
        mark = len(board.raw)
        board.console_write(REQ_STATE)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and b"IMPROV\x01\x01\x01" not in board.raw[mark:]:
            time.sleep(0.05)
        assert b"IMPROV\x01\x01\x01" in board.raw[mark:], board.lines[-20:]
        while not stop.is_set():
            time.sleep(0.05)
        return f"{sent} malformed Improv frames, then a state request answered"

    attack(board, "malformed Improv frames", run)
    assert not [ln for ln in board.lines if "KeyboardInterrupt" in ln]


def test_crowded_air_refresh_and_form(board: VirtualBoard) -> None:
    """30 networks with 32-byte names: "Refresh list" then the form, 6 times, and the app API."""
    port = board.portal_port
    served = 0
    for _ in range(6):
        exchange(port, f"GET /rescan HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        data = exchange(port, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        if well_formed(data) == 200 and data.endswith(b"</html>"):
            served += 1
            assert data.count(b'type="radio"') == 16 and b"more networks nearby" in data
    data = exchange(port, f"GET /api/networks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    nets = json.loads(data.partition(b"\r\n\r\n")[2])
    print(
        f"\ncrowded air: the form served after a refresh {served} of 6; the app API lists "
        f"{len(nets['networks'])} networks and {nets['more']} more"
    )
    assert served == 6 and len(nets["networks"]) == 16 and nets["more"] == len(CROWDED) - 16
