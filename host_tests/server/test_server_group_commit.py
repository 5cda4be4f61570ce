"""Writes of concurrent requests: group commit on the writer thread (db.Database.transact).

Each request's write is one unit (a savepoint) of a write transaction; units queued while the writer is
busy share one commit (one fsync); a unit that fails is rolled back alone; nothing is answered before
the commit that holds it. A request alone in the server commits on the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest
from server_helpers import Provisioned, Twomes

from twtools.server import db as dbm
from twtools.server.testing import ReferenceServer

T0 = 1795348243


@pytest.fixture
def database(tmp_path: Path) -> dbm.Database:
    database = dbm.Database(tmp_path / "t.sqlite3")
    database.initialise(b"k" * 32)
    with database.write() as conn:
        conn.execute("CREATE TABLE t (v INTEGER NOT NULL UNIQUE)")
    return database


def _insert(value: int, fail: bool = False) -> object:
    def work(conn: sqlite3.Connection) -> tuple[int, str]:
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        if fail:
            raise ValueError(f"unit {value} fails after writing")
        return value, threading.current_thread().name

    return work


def _values(database: dbm.Database) -> list[int]:
    conn = database.connect()
    try:
        return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")]
    finally:
        conn.close()


def test_queued_units_share_a_commit_and_fail_alone(database: dbm.Database) -> None:
    async def main() -> list[object]:
        database.requests_in_flight = 2  # as while several requests are handled: the writer thread
        database._write_lock.acquire()  # the writer's first group waits; the rest queue behind it
        try:
            tasks = [asyncio.ensure_future(database.transact(_insert(v, fail=v == 3))) for v in range(10)]
            await asyncio.sleep(0.05)
            assert not any(t.done() for t in tasks)  # nothing answered before its commit
        finally:
            database._write_lock.release()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    results = asyncio.run(main())
    assert isinstance(results[3], ValueError)
    assert [r for k, r in enumerate(results) if k != 3] == [(v, "sqlite-writer") for v in range(10) if v != 3]
    assert _values(database) == [v for v in range(10) if v != 3]  # unit 3's own insert rolled back
    # The first unit may have been taken alone before the lock let go; the others shared one commit.
    assert database.grouped_units == 10
    assert database.group_commits <= 2


def test_a_lone_request_commits_on_the_loop(database: dbm.Database) -> None:
    async def main() -> object:
        assert database.requests_in_flight == 0
        return await database.transact(_insert(1))

    assert asyncio.run(main()) == (1, threading.current_thread().name)
    with pytest.raises(ValueError):
        asyncio.run(main_failing(database))
    assert _values(database) == [1]
    assert database.group_commits == 0


async def main_failing(database: dbm.Database) -> object:
    return await database.transact(_insert(2, fail=True))


def test_concurrent_uploads_are_each_stored_once(server: ReferenceServer, tw: Twomes) -> None:
    """Over HTTP: many devices upload at once (and each repeats its upload, and sends one with an
    invalid property); every measurement is stored exactly once, the bad uploads change nothing."""
    devices: list[Provisioned] = [tw.provision() for _ in range(12)]

    async def device(client: httpx.AsyncClient, k: int, dev: Provisioned) -> list[int]:
        good = {
            "upload_time": T0 + 100,
            "property_measurements": [
                {
                    "property_name": "heartbeat",
                    "measurements": [{"timestamp": T0 + i, "value": str(k)} for i in range(5)],
                }
            ],
        }
        bad = {
            "upload_time": T0 + 100,
            "property_measurements": [
                {"property_name": "heartbeat", "measurements": [{"timestamp": T0 + 50, "value": "x"}]},
                {"property_name": "nope", "measurements": [{"timestamp": T0, "value": "x"}]},
            ],
        }
        path = "/device/measurements/variable-interval"
        answers = await asyncio.gather(
            client.post(path, json=good, headers=dev.headers),
            client.post(path, json=bad, headers=dev.headers),
            client.post(path, json=good, headers=dev.headers),
        )
        return [r.status_code for r in answers]

    async def main() -> list[list[int]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60, trust_env=False) as client:
            return list(await asyncio.gather(*(device(client, k, d) for k, d in enumerate(devices))))

    assert asyncio.run(main()) == [[200, 400, 200]] * len(devices)
    for k, dev in enumerate(devices):
        r = tw.http.get(f"/admin/devices/{dev.name}/measurements", headers=tw.admin)
        assert [(m["property_name"], m["value"]) for m in r.json()] == [("heartbeat", str(k))] * 5
