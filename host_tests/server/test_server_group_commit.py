"""Writes of concurrent requests: group commit (db.Database.transact).

Each request's write is one unit (a savepoint) of a write transaction; the units of the requests that
reach it in the same turns of the event loop share one commit (one fsync); a unit that fails is rolled
back alone; nothing is answered before the commit that holds it. A request alone is a group of one.
"""

from __future__ import annotations

import asyncio
import sqlite3
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


def _insert(value: int, fail: bool = False, answered: list[bool] | None = None) -> object:
    def work(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        if answered is not None:
            answered.append(any(f.done() for f in FUTURES))
        if fail:
            raise ValueError(f"unit {value} fails after writing")
        return value

    return work


FUTURES: list[asyncio.Future[object]] = []


def _values(database: dbm.Database) -> list[int]:
    conn = database.connect()
    try:
        return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")]
    finally:
        conn.close()


def test_concurrent_units_share_a_commit_and_fail_alone(database: dbm.Database) -> None:
    answered: list[bool] = []

    async def main() -> list[object]:
        FUTURES[:] = [
            asyncio.ensure_future(database.transact(_insert(v, fail=v == 3, answered=answered)))
            for v in range(10)
        ]
        return list(await asyncio.gather(*FUTURES, return_exceptions=True))

    results = asyncio.run(main())
    assert isinstance(results[3], ValueError)
    assert [r for k, r in enumerate(results) if k != 3] == [v for v in range(10) if v != 3]
    assert _values(database) == [v for v in range(10) if v != 3]  # unit 3's own insert rolled back
    assert (database.group_commits, database.grouped_units) == (1, 10)  # one transaction, one fsync
    assert answered == [False] * 10  # no request answered while the group was being written


def test_a_lone_unit_is_a_group_of_one_with_no_savepoint(database: dbm.Database) -> None:
    statements: list[str] = []

    async def main(value: int, fail: bool) -> object:
        database._worker_conn().set_trace_callback(statements.append)  # the loop thread's connection
        return await database.transact(_insert(value, fail=fail))

    assert asyncio.run(main(1, False)) == 1
    assert statements == ["BEGIN IMMEDIATE", "INSERT INTO t (v) VALUES (1)", "COMMIT"]
    statements.clear()
    with pytest.raises(ValueError, match="unit 2 fails"):
        asyncio.run(main(2, True))
    assert statements == ["BEGIN IMMEDIATE", "INSERT INTO t (v) VALUES (2)", "ROLLBACK"]
    assert _values(database) == [1]  # the failed unit's transaction rolled back
    assert (database.group_commits, database.grouped_units) == (1, 1)
    assert asyncio.run(main(3, False)) == 3  # the connection is still good
    assert _values(database) == [1, 3]


def test_a_failed_commit_fails_its_whole_group_and_the_next_group_goes_on(database: dbm.Database) -> None:
    with database.write() as conn:  # a reference checked at COMMIT: an orphan makes COMMIT fail
        conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE c (p INTEGER REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)")

    def orphan(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO c (p) VALUES (99)")
        return "orphan"

    async def main() -> tuple[list[object], object]:
        group = [database.transact(orphan), database.transact(_insert(1)), database.transact(_insert(2))]
        failed = list(await asyncio.gather(*group, return_exceptions=True))
        return failed, await database.transact(_insert(3))

    failed, after = asyncio.run(main())
    assert all(isinstance(r, sqlite3.IntegrityError) for r in failed), failed  # no unit answered as stored
    assert after == 3
    assert _values(database) == [3]
    assert (database.group_commits, database.grouped_units) == (1, 1)


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
