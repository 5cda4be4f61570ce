"""The reference server under load against its framework's ceiling: the same FastAPI/uvicorn stack
(same request models, same uvicorn protocol and settings) answering constants on the same paths, with
``async`` endpoints and the same dependencies as the server's device endpoints (the body, and the
bearer token for uploads): the fastest FastAPI answers those paths (a sync endpoint would add a hop to
a worker thread that the framework does not need and the server does not pay).

Both run as their own process on 127.0.0.1; the load comes from this process: C clients (1, 10, 100),
each on one keep-alive HTTP/1.1 connection, sending the next request when the answer is in, for a
fixed time. Figures per (endpoint, C): answered requests per second, p50 and p99 latency. Every answer
must be a 200 (else the benchmark fails). Uploads: 4 new measurements each (variable interval), by
devices activated beforehand, every upload a new one (a repeat is not stored again, which is cheaper);
activations: POST /device/activate of devices attached to an account (the server's per-device
activation rate is lifted: the limiter is not what is measured).

Durability is part of the figure: the server runs with ``--sync-interval 1`` (an answered write is on
disk within a second; a power loss of the server can lose the last second's answered writes, a crash of
its process nothing), and a second server with the default (every answered write on disk before its
answer) is measured at 1 client, where its fsync per request shows: docs/api.md, "Durability".
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from twtools.server import schemas as s
from twtools.server.testing import ReferenceServer

LEVELS = (1, 10, 100)
SYNC_INTERVAL = "1"  # the measured server's --sync-interval (seconds)
DURABLE_LEVELS = (1,)  # the default durability is measured at these levels too
_BEARER = HTTPBearer()  # module level: the annotations are resolved in the module's namespace


def constants_app() -> Any:
    """FastAPI answering the benchmarked paths with constants, after the same body validation."""
    app = FastAPI()

    @app.post("/device/measurements/variable-interval", response_model=s.MeasurementsUploadResult)
    async def upload(
        body: s.MeasurementsUploadVariable, _c: Annotated[HTTPAuthorizationCredentials, Depends(_BEARER)]
    ) -> dict[str, Any]:
        n = sum(len(p.measurements) for p in body.property_measurements)
        return {"server_time": "2026-01-01T00:00:00Z", "size": n}

    @app.post("/device/activate", response_model=s.SessionToken)
    async def activate(body: s.ActivationRequest) -> dict[str, str]:
        return {"session_token": "1.abcdefghijklmnopqrstuvwxyz"}

    return app


def _serve_constants() -> None:  # python -m twtools.bench_server (the reference process)
    import uvicorn

    # proto IPPROTO_TCP as the server's: asyncio sets TCP_NODELAY only on such sockets
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    print(sock.getsockname()[1], flush=True)
    from twtools.server.guard import ConnectionLimits, guarded_protocol

    config = uvicorn.Config(
        constants_app(),
        log_level="warning",
        access_log=False,
        server_header=False,
        http=guarded_protocol(ConnectionLimits()),  # the reference server's protocol, default limits
    )
    uvicorn.Server(config).run(sockets=[sock])


@dataclass
class Load:
    path: str
    bodies: list[tuple[bytes, bytes]]  # (extra header lines, body) cycled per client
    latencies: list[float] = field(default_factory=list)
    count: int = 0


async def _client(port: int, load: Load, offset: int, step: int, until: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while time.perf_counter() < until:
            extra, body = load.bodies[i % len(load.bodies)]
            i += step
            t0 = time.perf_counter()
            writer.write(
                b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n%s\r\n%s" % (load.path.encode(), len(body), extra, body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            n = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    n = int(line[15:])
            answer = await reader.readexactly(n)
            if status != b"200":
                raise RuntimeError(f"{load.path}: {status.decode()} {answer[:200]!r}")
            load.latencies.append(time.perf_counter() - t0)
            load.count += 1
    finally:
        writer.close()


def run_load(port: int, load: Load, clients: int, seconds: float) -> dict[str, float]:
    async def main() -> float:
        t0 = time.perf_counter()
        until = t0 + seconds
        await asyncio.gather(*(_client(port, load, k, clients, until) for k in range(clients)))
        return time.perf_counter() - t0

    load.latencies, load.count = [], 0
    wall = asyncio.run(main())
    lat = sorted(load.latencies)
    return {
        "rps": load.count / wall,
        "count": load.count,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
    }


class _Stamp:
    def __init__(self) -> None:
        self.t = 1_700_000_000

    def next(self) -> int:
        self.t += 1
        return self.t


def _upload_bodies(tokens: list[str], stamp: _Stamp, per_token: int) -> list[tuple[bytes, bytes]]:
    out = []
    for _ in range(per_token):
        for tok in tokens:
            t = stamp.next() * 10
            body = {
                "upload_time": t + 5,
                "property_measurements": [
                    {
                        "property_name": "heartbeat",
                        "measurements": [{"timestamp": t + k, "value": str(k)} for k in range(4)],
                    }
                ],
            }
            out.append((b"Authorization: Bearer %s\r\n" % tok.encode(), json.dumps(body).encode()))
    return out


# more requests per second than either server answers on this machine (the constants: ~5,000)
_MAX_RPS = 12_000


def _bodies_per_client(seconds: float, clients: int) -> int:
    return max(1, int(seconds * _MAX_RPS) // clients + 1)


def _provision(server: ReferenceServer, n: int, prefix: str) -> tuple[list[str], list[str]]:
    """n devices attached to one account: (activation tokens, session tokens)."""
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    acts, sessions = [], []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/admin/accounts", json={"name": f"bench {prefix}"}, headers=admin)
        r.raise_for_status()
        account = {"Authorization": f"Bearer {r.json()['session_token']}"}
        base = 0xA00000 if prefix == "a" else 0xB00000
        for k in range(n):
            act = f"{prefix}{k:012d}".ljust(16, "0")
            r = http.post(
                "/device",
                json={
                    "name": f"TWOMES-{base + k:06X}",
                    "device_type": "Generic-Test",
                    "activation_token": act,
                },
                headers=admin,
            )
            r.raise_for_status()
            http.post(
                "/account/device/activate", json={"activation_token": act}, headers=account
            ).raise_for_status()
            r = http.post("/device/activate", json={"activation_token": act})
            r.raise_for_status()
            acts.append(act)
            sessions.append(r.json()["session_token"])
    return acts, sessions


def measure(
    runs: int,
    seconds: float,
    levels: tuple[int, ...] = LEVELS,
    durable_levels: tuple[int, ...] = DURABLE_LEVELS,
) -> dict[str, Any]:
    """{"upload"|"activate": {C: [{"server": {...}, "constants": {...}} per run]}, "durable_upload"|
    "durable_activate": the same for the server with the default durability at ``durable_levels``,
    "sync_interval": the measured server's --sync-interval}"""
    env = dict(os.environ)
    ref = subprocess.Popen(
        [sys.executable, "-m", "twtools.bench_server"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert ref.stdout is not None
        ref_port = int(ref.stdout.readline())
        limits = ["--activation-rate-device", "1000000/1", "--activation-rate-address", "1000000/1"]
        with (
            ReferenceServer(
                access_log=False, extra_args=limits + ["--sync-interval", SYNC_INTERVAL]
            ) as server,
            ReferenceServer(access_log=False, extra_args=limits) as durable,
        ):
            n = max(levels + durable_levels)
            # per server: (prefix of its figures, port, its levels, activation bodies, upload sessions)
            targets = []
            for prefix, srv, lv in (("", server, levels), ("durable_", durable, durable_levels)):
                acts, _sessions = _provision(srv, n, "a")
                _, upload_sessions = _provision(srv, n, "u")
                act_bodies = [(b"", json.dumps({"activation_token": a}).encode()) for a in acts]
                targets.append((prefix, int(srv.url.rsplit(":", 1)[1]), lv, act_bodies, upload_sessions))
            stamp = _Stamp()
            out: dict[str, Any] = {"sync_interval": float(SYNC_INTERVAL)}
            for prefix, _, lv, _, _ in targets:
                for what in ("upload", "activate"):
                    out[prefix + what] = {c: [] for c in lv}
            for _ in range(runs):
                for prefix, port, lv, act_bodies, upload_sessions in targets:
                    for c in lv:
                        for what, path in (
                            ("upload", "/device/measurements/variable-interval"),
                            ("activate", "/device/activate"),
                        ):
                            # every upload new (a repeat is answered without storing anything), one
                            # list for both: the constants do not store, the server sees each body once
                            if what == "upload":
                                bodies = _upload_bodies(
                                    upload_sessions[:c], stamp, _bodies_per_client(seconds, c)
                                )
                            else:
                                bodies = act_bodies[:c]
                            pair = {}
                            for who, p in (("constants", ref_port), ("server", port)):
                                pair[who] = run_load(p, Load(path, bodies), c, seconds)
                                if what == "upload" and pair[who]["count"] > len(bodies):
                                    raise RuntimeError(
                                        f"{what}: {len(bodies)} bodies were not enough for {who}"
                                    )
                            out[prefix + what][c].append(pair)
            return out
    finally:
        ref.terminate()
        ref.wait(10)


if __name__ == "__main__":
    _serve_constants()


def _fill(server: ReferenceServer, devices: int, measurements: int, big: int) -> str:
    """`devices` devices of the Generic-Test type with `measurements` in all, `big` of them on the
    first device (the rest spread evenly), written straight into the server's database file (the
    server is running: WAL). Returns the first device's name."""
    import sqlite3

    conn = sqlite3.connect(server.db_path, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        type_id = conn.execute("SELECT id FROM device_type WHERE name = 'Generic-Test'").fetchone()[0]
        prop = conn.execute(
            "SELECT id FROM property WHERE device_type_id = ? AND name = 'heartbeat'", (type_id,)
        )
        prop_id = prop.fetchone()[0]
        first = conn.execute("SELECT coalesce(max(id), 0) FROM device").fetchone()[0] + 1
        conn.executemany(
            "INSERT INTO device (id, name, device_type_id, activation_token_hash, created_on, last_seen)"
            " VALUES (?, ?, ?, ?, '2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z')",
            [
                (first + k, f"TWOMES-{0xC00000 + k:06X}", type_id, f"k1:bench{first + k:016d}")
                for k in range(devices)
            ],
        )
        conn.executemany(
            "INSERT INTO upload (id, device_id, server_time, device_time, size) VALUES (?, ?, '2026-01-02', 0, 0)",
            [(first + k, first + k) for k in range(devices)],
        )
        rest = (measurements - big) // max(1, devices - 1)

        def rows() -> Any:
            for k in range(devices):
                for t in range(big if k == 0 else rest):
                    yield (first + k, prop_id, first + k, 1_700_000_000 + t * 60, "1")

        conn.executemany(
            "INSERT INTO measurement (device_id, property_id, upload_id, timestamp, value) VALUES (?, ?, ?, ?, ?)",
            rows(),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return f"TWOMES-{0xC00000:06X}"


def _timed_get(
    http: httpx.Client, path: str, runs: int, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    times, size = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        r = http.get(path, params=params)
        times.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:200]}")
        size = len(r.content)
    return {"ms": times, "bytes": size}


def _oldest_page_url(http: httpx.Client, path: str) -> str:
    """The URL of a device's oldest page, reached the way a client pages: from the newest page along
    the `Link: rel="next"` cursors (not timed)."""
    url = path
    while True:
        r = http.get(url)
        if r.status_code != 200:
            raise RuntimeError(f"GET {url}: {r.status_code} {r.text[:200]}")
        nxt = r.links.get("next")
        if nxt is None:
            return url
        url = nxt["url"]


def measure_scale(runs: int, devices: int, measurements: int, big: int) -> dict[str, Any]:
    """The admin reads at a small size (100 devices, 10,000 measurements, 1,000 on one device: the
    reference) and at the given size, each on its own fresh server."""
    out: dict[str, Any] = {}
    for label, (n, m, b) in (("small", (100, 10_000, 1_000)), ("large", (devices, measurements, big))):
        with ReferenceServer(access_log=False) as server:
            t0 = time.perf_counter()
            name = _fill(server, n, m, b)
            fill_s = time.perf_counter() - t0
            admin = {"Authorization": f"Bearer {server.admin_token}"}
            with httpx.Client(base_url=server.url, headers=admin, timeout=120) as http:
                out[label] = {
                    "devices": n,
                    "measurements": m,
                    "fill_s": fill_s,
                    "device_page": _timed_get(http, "/admin/devices", runs),
                    "one_device": _timed_get(http, f"/admin/devices/{name}", runs),
                    "measurement_page": _timed_get(http, f"/admin/devices/{name}/measurements", runs),
                    "oldest_page": _timed_get(
                        http, f"/admin/devices/{name}/measurements", runs, {"skip": max(0, b - 1000)}
                    ),
                    "oldest_by_cursor": _timed_get(
                        http, _oldest_page_url(http, f"/admin/devices/{name}/measurements"), runs
                    ),
                }
    return out
