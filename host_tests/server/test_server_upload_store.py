"""What one upload costs the database: a repeated upload (a device re-sending after a lost answer)
is undone without reading the measurement table, whatever its size."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from twtools.server import app as appm
from twtools.server import db as dbm

T0 = 1795348243


@pytest.fixture
def stored(tmp_path: Path) -> tuple[dbm.Database, appm.AuthedDevice]:
    """A database with one device and 20,000 measurements of it (one upload)."""
    database = dbm.Database(tmp_path / "t.sqlite3")
    database.initialise(b"k" * 32)
    with database.write() as conn:
        type_id = conn.execute("SELECT id FROM device_type WHERE name = 'Generic-Test'").fetchone()[0]
        prop = conn.execute(
            "SELECT id FROM property WHERE device_type_id = ? AND name = 'heartbeat'", (type_id,)
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO device (id, name, device_type_id, activation_token_hash, created_on)"
            " VALUES (1, 'TWOMES-000001', ?, 'k1:x', '2026-01-01')",
            (type_id,),
        )
        conn.execute(
            "INSERT INTO upload (id, device_id, server_time, device_time, size) VALUES (1, 1, 't', 0, 0)"
        )
        conn.executemany(
            "INSERT INTO measurement (device_id, property_id, upload_id, timestamp, value) VALUES (1, ?, 1, ?, 'v')",
            [(prop, T0 - 60 * k) for k in range(1, 20_001)],
        )
    return database, appm.AuthedDevice(1, "TWOMES-000001", type_id)


def _upload(database: dbm.Database, device: appm.AuthedDevice, values: list[tuple[float, str]]) -> int:
    """Store one upload of heartbeat values; returns the SQLite VM steps it took (in thousands)."""
    conn = database._worker_conn()  # the connection the upload's transaction runs on (this thread's)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 1000)
    try:
        answer = asyncio.run(appm._store_measurements(database, device, T0 + 600, [("heartbeat", values)]))
    finally:
        conn.set_progress_handler(None, 0)
    assert answer["size"] == len(values)
    return steps[0]


def _uploads(database: dbm.Database) -> list[tuple[int, int]]:
    conn = database.connect()
    try:
        return [tuple(r) for r in conn.execute("SELECT id, size FROM upload ORDER BY id")]
    finally:
        conn.close()


def test_a_repeated_upload_leaves_no_row_and_reads_no_table(
    stored: tuple[dbm.Database, appm.AuthedDevice],
) -> None:
    database, device = stored
    values = [(T0 + k, str(k)) for k in range(4)]
    first = _upload(database, device, values)
    assert _uploads(database) == [(1, 0), (2, 4)]
    repeat = _upload(database, device, values)
    assert _uploads(database) == [(1, 0), (2, 4)]  # nothing new: no upload row
    # A scan of the 20,000 measurements takes far more than 10,000 steps; the upload takes a few hundred.
    assert first <= 10 and repeat <= 10, (first, repeat)
    partly = _upload(database, device, values + [(T0 + 4, "4")])
    assert _uploads(database) == [(1, 0), (2, 4), (3, 1)]  # only the new one counted
    assert partly <= 10
    conn = database.connect()
    try:
        assert conn.execute("SELECT count(*) FROM measurement").fetchone()[0] == 20_005
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def test_the_old_way_would_read_the_table(stored: tuple[dbm.Database, appm.AuthedDevice]) -> None:
    """The yardstick of the test above: deleting an upload row reads the measurement table."""
    database, _ = stored
    conn = database.connect()
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    try:
        conn.execute(
            "INSERT INTO upload (id, device_id, server_time, device_time, size) VALUES (9, 1, 't', 0, 0)"
        )
        conn.set_progress_handler(count, 1000)
        conn.execute("DELETE FROM upload WHERE id = 9")
        assert steps[0] > 10
    finally:
        conn.set_progress_handler(None, 0)
        conn.close()


# Starlette's test client over httpx is deprecated in favour of httpx2 (not a dependency here).
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_uploads_in_the_app_are_group_committed(tmp_path: Path) -> None:
    """In the app as uvicorn runs it (lifespan started): each upload is a unit of a group commit
    (alone: a group of one), new or repeated."""
    from types import SimpleNamespace

    from fastapi.testclient import TestClient
    from server_helpers import Twomes

    app = appm.create_app(tmp_path / "t.sqlite3", tmp_path / "files")
    database: dbm.Database = app.state.db
    with TestClient(app) as http:
        tw = Twomes(SimpleNamespace(admin_token=app.state.initial_admin_token), http)  # type: ignore[arg-type]
        dev = tw.provision()
        before = (database.group_commits, database.grouped_units)
        values = [{"timestamp": T0 - k, "value": "1"} for k in range(3)]
        body = {
            "upload_time": T0,
            "property_measurements": [{"property_name": "heartbeat", "measurements": values}],
        }
        for _ in range(2):  # new, then a repeat
            r = http.post("/device/measurements/variable-interval", json=body, headers=dev.headers)
            assert (r.status_code, r.json()["size"]) == (200, 3)
        assert (database.group_commits - before[0], database.grouped_units - before[1]) == (2, 2)
    assert _uploads(database) == [(1, 3)]  # the repeat left no upload row
