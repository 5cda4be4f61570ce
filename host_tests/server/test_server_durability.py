"""The two durability modes of the reference server (db.Database, ``run --sync-interval``).

Default: ``synchronous = FULL``, every answered write is on disk before its answer. With
``--sync-interval SECONDS``: ``synchronous = NORMAL`` and a syncer (db.WalSyncer) that fsyncs the WAL at
most every SECONDS when something was committed, and once more on a clean shutdown. In both modes a
crash of the process (SIGKILL) loses nothing that was answered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import Twomes

from twtools.cli import main
from twtools.server import app as appm
from twtools.server import commit_cost
from twtools.server import db as dbm
from twtools.server.testing import ReferenceServer

T0 = 1795348243
WARNING_1S = (
    "WARNING:  durability: answered writes reach the disk within 1.0 s (--sync-interval); "
    "a power loss of the server can lose the last 1.0 s of answered writes"
)


class FakeDisk:
    """An ``fsync`` that records which file (inode) it was given, and can take (fake) time."""

    def __init__(self, clock: FakeClock | None = None, duration: float = 0.0) -> None:
        self.synced: list[int] = []  # inodes, in order
        self.clock = clock
        self.duration = duration
        self.event = threading.Event()

    def __call__(self, fd: int) -> None:
        self.synced.append(os.fstat(fd).st_ino)
        if self.clock is not None:
            self.clock.now += self.duration
        self.event.set()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _inode(path: Path) -> int:
    return path.stat().st_ino


@pytest.fixture
def wal(tmp_path: Path) -> Path:
    path = tmp_path / "t.sqlite3-wal"
    path.write_bytes(b"frames")
    return path


# ---------------------------------------------------------------------------------------- the syncer


def test_the_syncer_fsyncs_the_wal_after_a_commit_and_not_without_one(tmp_path: Path, wal: Path) -> None:
    disk = FakeDisk()
    syncer = dbm.WalSyncer(tmp_path / "t.sqlite3", 1.0, fsync=disk)
    assert syncer.sync() is False and disk.synced == []  # nothing committed: no fsync
    syncer.committed()
    assert syncer.pending
    assert syncer.sync() is True
    # The WAL, and its directory the first time this WAL file is seen (its entry must survive too).
    assert disk.synced == [_inode(wal), _inode(tmp_path)]
    assert not syncer.pending
    assert syncer.sync() is False and len(disk.synced) == 2  # nothing new: no fsync
    syncer.committed()
    syncer.committed()
    assert syncer.sync() is True
    assert disk.synced[2:] == [_inode(wal)]  # one fsync for both commits; the directory is not synced again
    # SQLite removed the WAL (last connection closed, after a checkpoint) and made a new file later:
    # (the old file is kept under another name so that the new one cannot get its inode number)
    wal.rename(tmp_path / "old-wal")
    wal.write_bytes(b"new frames")
    syncer.committed()
    assert syncer.sync() is True
    assert disk.synced[3:] == [_inode(wal), _inode(tmp_path)]
    assert syncer.syncs == 3


def test_a_missing_wal_holds_nothing_to_sync(tmp_path: Path) -> None:
    disk = FakeDisk()
    syncer = dbm.WalSyncer(tmp_path / "t.sqlite3", 1.0, fsync=disk)
    syncer.committed()
    assert syncer.sync() is False
    assert disk.synced == [] and not syncer.pending


@pytest.mark.parametrize("bad", [0, -1, 60.001, float("nan"), float("inf")])
def test_the_syncer_refuses_a_bad_interval(tmp_path: Path, bad: float) -> None:
    with pytest.raises(ValueError, match="sync interval"):
        dbm.WalSyncer(tmp_path / "t.sqlite3", bad)
    with pytest.raises(ValueError, match="sync interval"):
        dbm.Database(tmp_path / "t.sqlite3", sync_interval=bad)


def _drive(
    syncer_of: Callable[[Callable[[float], bool]], dbm.WalSyncer],
    clock: FakeClock,
    script: list[int],
) -> tuple[dbm.WalSyncer, list[float], list[tuple[float, float]]]:
    """Run a syncer's loop on a scripted ``wait``: during sleep k, ``script[k]`` commits are made at
    evenly spread (fake) times; after the script the loop is told to stop. Returns the syncer, the
    timeouts it asked for, and (commit time, time it was on disk) for the commits synced."""
    timeouts: list[float] = []
    commits: list[float] = []
    done: list[tuple[float, float]] = []
    holder: list[dbm.WalSyncer] = []

    def wait(timeout: float) -> bool:
        syncer = holder[0]
        if not syncer.pending:  # the sync that just ended covered every commit made before it
            done.extend((t, clock.now) for t in commits[len(done) :])
        timeouts.append(timeout)
        if len(timeouts) > len(script):
            return True
        n = script[len(timeouts) - 1]
        for i in range(n):
            commits.append(clock.now + timeout * (i + 1) / (n + 1))
            syncer.committed()
        clock.now += timeout
        return False

    holder.append(syncer_of(wait))
    holder[0].run()
    return holder[0], timeouts, done


def test_the_loop_syncs_at_most_every_interval_and_only_after_commits(tmp_path: Path, wal: Path) -> None:
    clock = FakeClock()
    disk = FakeDisk(clock, duration=0.25)  # a slow disk: each fsync takes 0.25 s (of fake time)
    syncer, timeouts, done = _drive(
        lambda wait: dbm.WalSyncer(tmp_path / "t.sqlite3", 1.0, fsync=disk, clock=clock, wait=wait),
        clock,
        [3, 0, 0, 1, 5, 0],
    )
    # Ticks every 1.0 s from the start of the previous sync: a sync of 0.25 s (WAL + its directory the
    # first time, WAL alone then) shortens the next sleep, a tick with nothing to do does not.
    assert timeouts == pytest.approx([1.0, 0.5, 1.0, 1.0, 0.75, 0.75, 1.0])
    assert syncer.syncs == 3  # after the ticks that followed commits only
    assert disk.synced == [_inode(wal), _inode(tmp_path), _inode(wal), _inode(wal)]
    assert len(done) == 9  # every commit made it to disk
    for committed_at, on_disk_at in done:
        # The bound: on disk within the interval plus this disk's fsyncs.
        assert 0 < on_disk_at - committed_at <= 1.0 + 2 * 0.25


def test_a_sync_slower_than_the_interval_is_followed_at_once(tmp_path: Path, wal: Path) -> None:
    clock = FakeClock()
    disk = FakeDisk(clock, duration=0.8)  # WAL + directory: 1.6 s, longer than the interval
    _, timeouts, _ = _drive(
        lambda wait: dbm.WalSyncer(tmp_path / "t.sqlite3", 1.0, fsync=disk, clock=clock, wait=wait),
        clock,
        [1, 1],
    )
    assert timeouts == pytest.approx([1.0, 0.0, 0.2])


def test_a_failing_fsync_is_logged_and_tried_again(
    tmp_path: Path, wal: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    calls: list[int] = []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")

    syncer, _, _ = _drive(
        lambda wait: dbm.WalSyncer(tmp_path / "t.sqlite3", 1.0, fsync=fsync, clock=clock, wait=wait),
        clock,
        [1, 0],
    )
    assert "durability: fsync of" in caplog.text and "may not be on disk" in caplog.text
    assert syncer.syncs == 1 and not syncer.pending  # the commit was synced at the next tick
    assert len(calls) == 3  # failed WAL fsync; then WAL + directory


# ------------------------------------------------------------------------------- the database's modes


def _synchronous(database: dbm.Database) -> int:
    conn = database.connect()
    try:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def bounded(tmp_path: Path) -> Iterator[tuple[dbm.Database, FakeDisk]]:
    disk = FakeDisk()
    database = dbm.Database(tmp_path / "t.sqlite3", sync_interval=60, fsync=disk)
    yield database, disk
    database.close()


def test_the_modes_set_synchronous(tmp_path: Path, bounded: tuple[dbm.Database, FakeDisk]) -> None:
    full = dbm.Database(tmp_path / "full.sqlite3")
    full.initialise(b"k" * 32)
    assert full.syncer is None
    assert _synchronous(full) == 2  # FULL
    with full.write() as conn:  # every worker's own connection too
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    database, _ = bounded
    database.initialise(b"k" * 32)
    assert _synchronous(database) == 1  # NORMAL
    with database.write() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
        # a checkpoint fsyncs twice on the writer's thread (the event loop): rarer in this mode
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == dbm.WAL_PAGES_BOUNDED == 10_000
    with full.write() as conn:
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # SQLite's own
    assert database.connect().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_initialise_is_synced_and_close_makes_the_final_sync(
    tmp_path: Path, bounded: tuple[dbm.Database, FakeDisk], caplog: pytest.LogCaptureFixture
) -> None:
    database, disk = bounded
    wal = tmp_path / "t.sqlite3-wal"
    assert [r.getMessage() for r in caplog.get_records("setup")] == [dbm.durability_warning(60)]
    database.initialise(b"k" * 32)  # the first admin token is on disk before it is handed out
    assert database.syncer is not None
    assert database.syncer.syncs == 1 and disk.synced == [_inode(wal), _inode(tmp_path)]
    with database.write() as conn:
        conn.execute("CREATE TABLE t (v INTEGER)")
    # The thread sleeps 60 s: only close() can have synced this commit.
    assert database.syncer.pending
    database.close()
    assert not database.syncer.pending
    assert database.syncer.syncs == 2 and disk.synced[2:] == [_inode(wal)]
    database.close()  # idempotent; nothing new, no fsync
    assert database.syncer.syncs == 2


def test_the_syncer_thread_syncs_within_the_interval(tmp_path: Path) -> None:
    """Real time, wide margins: the thread (interval 0.05 s) syncs a commit, then stays idle."""
    disk = FakeDisk()
    database = dbm.Database(tmp_path / "t.sqlite3", sync_interval=0.05, fsync=disk)
    try:
        database.initialise(b"k" * 32)
        syncer = database.syncer
        assert syncer is not None
        disk.event.clear()
        before = len(disk.synced)
        with database.write() as conn:
            conn.execute("CREATE TABLE t (v INTEGER)")
        assert disk.event.wait(30), "no fsync within 30 s of a commit (interval 0.05 s)"
        assert len(disk.synced) == before + 1 and not syncer.pending
        threading.Event().wait(0.3)  # several ticks with nothing committed: no fsync
        assert len(disk.synced) == before + 1
    finally:
        database.close()


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_the_app_makes_the_final_sync_when_its_lifespan_ends(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient  # runs the app's lifespan as uvicorn does

    app = appm.create_app(tmp_path / "t.sqlite3", tmp_path / "files", sync_interval=60)
    database: dbm.Database = app.state.db
    assert database.syncer is not None
    with TestClient(app) as client:
        r = client.post(
            "/admin/accounts",
            json={"name": "kept"},
            headers={"Authorization": f"Bearer {app.state.initial_admin_token}"},
        )
        assert r.status_code == 201, r.text
        assert database.syncer.pending  # answered, not synced yet (the thread sleeps 60 s)
    assert not database.syncer.pending  # the lifespan's end synced it


# ------------------------------------------------------------------------------------ the command line


def test_commit_cost_prints_the_figures(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert commit_cost.main(["--dir", str(tmp_path), "--commits", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "synchronous = FULL  ",
        "synchronous = NORMAL",
        "fsync of the WAL after 20 commits",
        "wal_checkpoint(PASSIVE) after 20 commits",
    ]
    assert list(tmp_path.iterdir()) == []  # its databases are removed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be more than 0 and at most 60 seconds, not '0'"),
        ("-1", "must be more than 0 and at most 60 seconds, not '-1'"),
        ("60.5", "must be more than 0 and at most 60 seconds, not '60.5'"),
        ("nan", "must be more than 0 and at most 60 seconds, not 'nan'"),
        ("1s", "not a number of seconds: '1s'"),
        ("", "not a number of seconds: ''"),
    ],
)
def test_a_bad_sync_interval_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str, message: str
) -> None:
    db = tmp_path / "db.sqlite3"
    with pytest.raises(SystemExit) as exit_:
        main(["server", "run", "--port", "0", "--db", str(db), "--sync-interval", value])
    assert exit_.value.code == 2
    assert f"error: argument --sync-interval: {message}" in capsys.readouterr().err
    assert not db.exists()


def _upload(tw: Twomes, dev_headers: dict[str, str], first: int, count: int) -> None:
    body = {
        "upload_time": T0 + first + count,
        "property_measurements": [
            {
                "property_name": "heartbeat",
                "measurements": [
                    {"timestamp": T0 + first + i, "value": str(first + i)} for i in range(count)
                ],
            }
        ],
    }
    r = tw.http.post("/device/measurements/variable-interval", json=body, headers=dev_headers)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("sync_interval", [None, "60", "1"])
def test_a_killed_server_process_loses_no_answered_write(tmp_path: Path, sync_interval: str | None) -> None:
    """SIGKILL right after the answers: everything answered is in the database (the commits are in the
    OS page cache; with --sync-interval 60 the syncer has not run yet). The startup line says the mode."""
    extra = ["--sync-interval", sync_interval] if sync_interval else []
    with ReferenceServer(tmp_path / "srv", extra_args=extra) as server:
        with httpx.Client(base_url=server.url, timeout=60.0, trust_env=False) as http:
            tw = Twomes(server, http)
            dev = tw.provision()
            for k in range(5):
                _upload(tw, dev.headers, 10 * k, 10)
        log = server.log_text()
        process = server._process
        assert process is not None
        os.kill(server.pid, signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
        server.stop()
    if sync_interval == "1":
        assert WARNING_1S in log.splitlines()
    elif sync_interval == "60":
        assert "within 60.0 s (--sync-interval); a power loss of the server can lose the last 60.0 s" in log
    else:
        assert "durability:" not in log
    conn = sqlite3.connect(tmp_path / "srv" / "twomes.sqlite3")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (device_id,) = conn.execute("SELECT id FROM device WHERE name = ?", (dev.name,)).fetchone()
        assert conn.execute("SELECT session_token_hash IS NOT NULL FROM device").fetchone()[0] == 1
        values = [
            r[0]
            for r in conn.execute(
                "SELECT value FROM measurement WHERE device_id = ? ORDER BY timestamp", (device_id,)
            )
        ]
        assert values == [str(v) for v in range(50)]
        assert conn.execute("SELECT count(*) FROM upload").fetchone()[0] == 5
    finally:
        conn.close()


def _table(database: dbm.Database) -> None:
    database.initialise(b"k" * 32)
    with database.write() as conn:
        conn.execute("CREATE TABLE t (v INTEGER NOT NULL UNIQUE)")


def _insert(value: int, turns: list[int], clock: list[int]) -> Any:
    def work(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        turns.append(clock[0])
        return value

    return work


@pytest.mark.parametrize("bounded_mode", [True, False])
def test_one_at_a_time_units_are_committed_at_once_only_in_the_bounded_mode(
    tmp_path: Path, bounded_mode: bool
) -> None:
    """--sync-interval: after ALONE_GROUPS groups of one in a row a unit is committed in its own
    request's turn (no group, no wait); a second unit in that turn brings grouping back. The default
    (an fsync per commit) always groups."""
    database = dbm.Database(
        tmp_path / "t.sqlite3", sync_interval=60 if bounded_mode else None, fsync=FakeDisk()
    )
    _table(database)
    ran: list[int] = []  # the loop turn each unit's work ran in
    clock = [0]  # loop turns, counted by a callback that reschedules itself

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = False

        def tick() -> None:
            clock[0] += 1
            if not stop:
                loop.call_soon(tick)

        loop.call_soon(tick)
        for v in range(dbm.ALONE_GROUPS + dbm.PROBE):  # one at a time: the next one is a probe
            started = clock[0]
            assert await database.transact(_insert(v, ran, clock)) == v
            assert ran[-1] - started == (0 if bounded_mode and v >= dbm.ALONE_GROUPS else 2), v
            await asyncio.sleep(0)  # the next request comes in a later turn
        groups = database.group_commits
        # three requests whose data came in together: the first (a probe) at once, the others grouped
        started = clock[0]
        values = await asyncio.gather(*(database.transact(_insert(100 + k, ran, clock)) for k in range(3)))
        assert values == [100, 101, 102]
        first = ran[-3]
        assert first > started  # gather starts its tasks in the next turn
        if bounded_mode:
            assert ran[-3:] == [first, first + 2, first + 2]
            assert database.group_commits == groups + 1 and database._alone == 0
            await asyncio.sleep(0)
            started = clock[0]
            await database.transact(_insert(200, ran, clock))  # grouping again: waits its turns
            assert ran[-1] - started == 2
        else:
            assert ran[-3:] == [first] * 3
        stop = True

    try:
        asyncio.run(main())
        conn = database.connect()
        assert (
            conn.execute("SELECT count(*) FROM t").fetchone()[0]
            == dbm.ALONE_GROUPS + dbm.PROBE + 3 + bounded_mode
        )
        conn.close()
    finally:
        database.close()


def test_a_unit_committed_at_once_that_raises_is_rolled_back(tmp_path: Path) -> None:
    database = dbm.Database(tmp_path / "t.sqlite3", sync_interval=60, fsync=FakeDisk())
    _table(database)
    database._alone = dbm.ALONE_GROUPS

    def failing(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES (1)")
        raise ValueError("the unit's own error")

    async def main() -> None:
        with pytest.raises(ValueError, match="own error"):
            await database.transact(failing)
        assert await database.transact(_insert(2, [], [0])) == 2

    try:
        asyncio.run(main())
        conn = database.connect()
        assert [r[0] for r in conn.execute("SELECT v FROM t")] == [2]
        conn.close()
    finally:
        database.close()
