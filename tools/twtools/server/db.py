"""SQLite storage of the reference server (stdlib ``sqlite3`` only).

One database file holds everything except the firmware images (those live in the files directory).
The schema is created on first start; the journal is WAL so readers never block the single writer.
Each thread keeps one connection (the event loop, the worker threads); every write
runs inside a ``BEGIN IMMEDIATE`` transaction, and the writers of this process queue on one lock
(``busy_timeout`` makes another process's writers wait instead of failing). The device endpoints write
through :meth:`Database.transact` (group commit, see there).

Secrets are never stored: session, account and admin tokens (256 random bits each) are kept as SHA-256
hashes. Activation tokens are short (a device prints 16 decimal digits; Twomes-style ones may have 8), so
they are kept as an HMAC-SHA-256 keyed with the server secret (a file outside the database): a leaked
database alone does not let anyone test guesses offline. Hashes of databases made before the key (schema
1: plain SHA-256) are still found and are replaced by the keyed hash the first time they are used.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("twtools.server")

SCHEMA_VERSION = 2
KEYED_PREFIX = "k1:"
SECRET_BYTES = 32
MAX_ID = 2**63 - 1
BUSY_TIMEOUT_MS = 30_000
MAX_SYNC_INTERVAL = 60.0  # seconds: the longest loss window ``--sync-interval`` accepts

GENERIC_TEST_TYPE = "Generic-Test"
GENERIC_TEST_DISPLAY_NAME = "Generic test device"
GENERIC_TEST_PROPERTIES: tuple[tuple[str, str], ...] = (
    ("heartbeat", ""),
    ("booted_fw", ""),
    ("new_fw", ""),
    ("batteryVoltage", "V"),
)

_SCHEMA = """
CREATE TABLE admin_token (
    id          INTEGER PRIMARY KEY,
    token_hash  TEXT NOT NULL,
    created_on  TEXT NOT NULL,
    revoked_on  TEXT
);
CREATE TABLE account (
    id                  INTEGER PRIMARY KEY,
    name                TEXT NOT NULL,
    session_token_hash  TEXT NOT NULL,
    created_on          TEXT NOT NULL,
    token_revoked_on    TEXT,
    pseudonym           INTEGER,
    activation_token_hash TEXT,
    activated_on        TEXT
);
CREATE TABLE device_type (
    id                       INTEGER PRIMARY KEY,
    name                     TEXT NOT NULL UNIQUE,
    display_name             TEXT NOT NULL,
    installation_manual_url  TEXT NOT NULL,
    target_release_id        INTEGER REFERENCES release(id)
);
CREATE TABLE property (
    id              INTEGER PRIMARY KEY,
    device_type_id  INTEGER NOT NULL REFERENCES device_type(id),
    name            TEXT NOT NULL,
    unit            TEXT NOT NULL DEFAULT '',
    UNIQUE (device_type_id, name)
);
CREATE TABLE release (
    id              INTEGER PRIMARY KEY,
    device_type_id  INTEGER NOT NULL REFERENCES device_type(id),
    version         TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('bundle', 'image')),
    size            INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    filename        TEXT NOT NULL,
    created_on      TEXT NOT NULL,
    manifest        TEXT,
    signature       TEXT,
    UNIQUE (device_type_id, version)
);
CREATE TABLE device (
    id                     INTEGER PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    device_type_id         INTEGER NOT NULL REFERENCES device_type(id),
    activation_token_hash  TEXT NOT NULL UNIQUE,
    account_id             INTEGER REFERENCES account(id),
    session_token_hash     TEXT,
    created_on             TEXT NOT NULL,
    activated_on           TEXT,
    last_seen              TEXT,
    target_release_id      INTEGER REFERENCES release(id),
    installed_version      TEXT,
    installed_release_id   INTEGER REFERENCES release(id),
    confirmed_on           TEXT
);
CREATE TABLE upload (
    id           INTEGER PRIMARY KEY,
    device_id    INTEGER NOT NULL REFERENCES device(id),
    server_time  TEXT NOT NULL,
    device_time  REAL NOT NULL,
    size         INTEGER NOT NULL
);
CREATE TABLE measurement (
    id           INTEGER PRIMARY KEY,
    device_id    INTEGER NOT NULL REFERENCES device(id),
    property_id  INTEGER NOT NULL REFERENCES property(id),
    upload_id    INTEGER NOT NULL REFERENCES upload(id),
    timestamp    REAL NOT NULL,
    value        TEXT NOT NULL
);
CREATE INDEX measurement_by_device_time ON measurement (device_id, timestamp, id);
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
CREATE UNIQUE INDEX measurement_once ON measurement (device_id, property_id, timestamp);
CREATE UNIQUE INDEX account_pseudonym ON account (pseudonym);
CREATE UNIQUE INDEX account_activation ON account (activation_token_hash);
"""

# Schema 1 -> 2: token revocation, the server-secret check, one measurement per (device, property, time)
# (duplicates a schema-1 server stored are dropped, the first one kept; so are times outside
# 1970..9999 it let in, which made reading the device's measurements fail), the Twomes account fields
# (pseudonym, activation token, activated_on).
_MIGRATE_1_TO_2 = """
ALTER TABLE admin_token ADD COLUMN revoked_on TEXT;
ALTER TABLE account ADD COLUMN token_revoked_on TEXT;
ALTER TABLE account ADD COLUMN pseudonym INTEGER;
ALTER TABLE account ADD COLUMN activation_token_hash TEXT;
ALTER TABLE account ADD COLUMN activated_on TEXT;
UPDATE account SET pseudonym = 800000 + id WHERE id < 100000;
CREATE UNIQUE INDEX account_pseudonym ON account (pseudonym);
CREATE UNIQUE INDEX account_activation ON account (activation_token_hash);
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
DELETE FROM measurement WHERE id NOT IN
    (SELECT min(id) FROM measurement GROUP BY device_id, property_id, timestamp);
DELETE FROM measurement WHERE NOT (timestamp BETWEEN 0 AND 253402300799);
CREATE UNIQUE INDEX measurement_once ON measurement (device_id, property_id, timestamp);
"""


class SchemaError(RuntimeError):
    """The database file exists but is not a reference-server database of a known version."""


def utcnow() -> str:
    """Now as an ISO-8601 UTC timestamp with an explicit offset (how every time is stored)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def unix_to_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


# ---------------------------------------------------------------------------------------------- tokens


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def keyed_hash(key: bytes, value: str) -> str:
    """The stored form of an activation token: ``k1:`` + HMAC-SHA-256 with the server secret."""
    return KEYED_PREFIX + hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def activation_hashes(key: bytes, token: str) -> tuple[str, str]:
    """(keyed hash, schema-1 plain SHA-256): a lookup matches either; only the first is ever written."""
    return keyed_hash(key, token), hash_secret(token)


class SecretError(RuntimeError):
    """The server secret file is missing, unreadable or does not belong to this database."""


def load_or_create_secret(path: Path, *, create: bool = True) -> tuple[bytes, bool]:
    """The server secret (hex in a 0600 file), made on first use; returns (key, created)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        if not create:
            raise SecretError(
                f"the server secret {path} is missing: without it no registered device can activate "
                "(restore the file, or pass --secret-file)"
            ) from None
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(SECRET_BYTES)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return key, True
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise SecretError(f"{path}: not a server secret (expected hex)") from None
    if len(key) < 16:
        raise SecretError(f"{path}: server secret too short")
    return key, False


def secret_check(key: bytes) -> str:
    """What the database keeps to recognise its secret (not the secret, nor enough to find it)."""
    return hmac.new(key, b"twomes reference server secret check", hashlib.sha256).hexdigest()


def new_token(ident: int) -> tuple[str, str]:
    """A bearer token ``<base64url(str(id)) without padding>.<random>`` and its SHA-256 hash."""
    prefix = base64.urlsafe_b64encode(str(ident).encode("ascii")).decode("ascii").rstrip("=")
    token = f"{prefix}.{secrets.token_urlsafe(32)}"
    return token, hash_secret(token)


def token_ident(token: str) -> int | None:
    """The row id a token claims, or None when the token is not of the ``<id>.<random>`` form."""
    prefix, sep, rest = token.partition(".")
    if not sep or not prefix or not rest or "." in rest or len(token) > 512:
        return None
    try:
        raw = base64.urlsafe_b64decode(prefix + "=" * (-len(prefix) % 4))
    except (binascii.Error, ValueError):
        return None
    if not raw.isdigit() or len(raw) > 18:
        return None
    ident = int(raw)
    return ident if 1 <= ident <= MAX_ID else None


def token_matches(token: str, stored_hash: str | None) -> bool:
    return bool(stored_hash) and hmac.compare_digest(hash_secret(token), stored_hash or "")


# ------------------------------------------------------------------------------------------ connection


T = TypeVar("T")


class _Alone(Exception):
    """The unit of a group of one raised: its transaction is rolled back (its error is in its outcome)."""


_Job = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]
MAX_GROUP = 256  # units of work in one group commit at most
# --sync-interval: after this many groups of one in a row, a unit is committed at once (transact)
ALONE_GROUPS = 8
# ... and then every PROBE-th such unit looks whether another unit comes in its turn of the loop
PROBE = 16


def durability_warning(interval: float) -> str:
    """The line the server logs at start in the bounded-loss mode (the mode and its window)."""
    window = repr(float(interval))
    return (
        f"durability: answered writes reach the disk within {window} s (--sync-interval); "
        f"a power loss of the server can lose the last {window} s of answered writes"
    )


# --sync-interval: the writers checkpoint the WAL when it passes this many pages (SQLite: 1,000).
# With synchronous = NORMAL a checkpoint is where the fsyncs are (the WAL's, then the database
# file's), on the writer's thread - the event loop, which answers nobody meanwhile: at one client
# every ~140th upload waited for them. Ten times rarer, each copies what ten did (a page written
# again and again - the device row, the tables' last leaves - is copied once): uploads at 1 client
# 0.78-0.81x -> 0.81-0.87x the framework's constants. The WAL file stays at ~40 MB (reused).
# (A checkpoint in the syncer's thread instead never caught up with a writer that never stops, so
# the WAL never restarted and grew without bound: 110 MB after 25,000 commits.)
WAL_PAGES_BOUNDED = 10_000


class WalSyncer:
    """Makes the commits of a ``synchronous = NORMAL`` database durable within ``interval`` seconds.

    With ``synchronous = NORMAL`` in WAL mode a COMMIT writes its frames to the WAL file (into the
    OS page cache) and returns without an fsync: the database stays consistent after a power loss
    (SQLite fsyncs the WAL before each checkpoint, the database file after it), but the newest
    commits can be missing. This syncer bounds how many: :meth:`committed` is called after each
    COMMIT; a daemon thread wakes every ``interval`` seconds and, if anything was committed since its
    last sync, fsyncs the WAL file (:meth:`sync`). A commit made before a sync starts is on disk when
    that sync returns, so an answered write is on disk at most ``interval`` seconds (plus one fsync
    and the thread's scheduling delay) after its answer. :meth:`close` stops the thread and makes a
    final sync. A crash of the *process* (kill -9) loses nothing in either mode: the committed frames
    are in the page cache, which the kernel writes out whatever happens to the process.

    Why an fsync of the WAL file rather than ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of
    its own: measured on this project's disk (ext4 on a virtio disk, 2026-12-05) the fsync after 20
    small commits took ~0.25 ms (median), the checkpoint ~0.34 ms - it fsyncs the WAL *and* the
    database file and copies the pages over, work the writers' own auto-checkpoint does anyway
    (``python -m twtools.server.commit_cost`` measures both). Worse, a passive checkpoint fsyncs the
    WAL only when it has frames to copy, and it copies only up to the oldest reader's snapshot: with a
    reader open it returned without any fsync, leaving the newest commits unsynced (seen with
    strace), so it would not bound the loss. An fsync of the file is unconditional and takes no
    SQLite lock: the writers go on while it runs (3 s of back-to-back commits on one thread: median
    ~8 us per write transaction with the syncer at 1 s and at 0.01 s alike).

    On Linux fsync(2) flushes the *file's* dirty data and metadata, whichever descriptor it is given
    (the page cache belongs to the inode, not to the descriptor; a read-only descriptor does as
    well), so a descriptor of our own syncs the frames SQLite's connections wrote. The file is opened
    anew at each sync: SQLite deletes the WAL when its last connection closes (after checkpointing
    it) and makes a new one later; a missing WAL holds nothing to sync. The first time a WAL file is
    seen, its directory is fsynced too (its entry must survive; SQLite in ``FULL`` mode does the same
    at a new WAL's first sync).

    ``fsync``, ``clock`` and ``wait`` (``wait(timeout)`` returns True to stop) are injectable so
    that tests drive the loop without wall-clock luck.
    """

    def __init__(
        self,
        db_path: Path,
        interval: float,
        *,
        fsync: Callable[[int], None] = os.fsync,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        if not 0 < interval <= MAX_SYNC_INTERVAL:  # also refuses NaN
            raise ValueError(f"sync interval must be more than 0 and at most {MAX_SYNC_INTERVAL:g} s")
        self.wal_path = db_path.with_name(db_path.name + "-wal")
        self.interval = float(interval)
        self._fsync = fsync
        self._clock = clock
        self._stop = threading.Event()
        self._wait = wait if wait is not None else self._stop.wait
        self._sync_lock = threading.Lock()  # one sync at a time (the thread's, a final one)
        self._committed = 0  # commits noted (by the writers, under the database's write lock)
        self._synced = 0  # of those, the ones known to be on disk
        self._wal_id: tuple[int, int] | None = None  # (device, inode) of the WAL whose entry is synced
        self._thread: threading.Thread | None = None
        self.syncs = 0  # fsyncs of the WAL made

    def committed(self) -> None:
        """A transaction was committed (call after COMMIT returned)."""
        self._committed += 1

    @property
    def pending(self) -> bool:
        """Whether commits were made since the last sync."""
        return self._committed != self._synced

    def sync(self) -> bool:
        """fsync the WAL if anything was committed since the last sync; whether it did."""
        with self._sync_lock:
            target = self._committed  # read before the fsync: these commits' frames are written
            if target == self._synced:
                return False
            try:
                fd = os.open(self.wal_path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:  # checkpointed (database file fsynced) and removed by SQLite
                self._synced = target
                return False
            try:
                stat = os.fstat(fd)
                # Our own read-only descriptor: Linux flushes the inode's dirty pages whichever
                # descriptor fsync gets (checked on this host, kernel 6.18, ext4: 64 MiB written through
                # a write-only descriptor, then an fsync of a second, read-only one took 32 ms and the
                # kernel's Dirty count fell from 66 MB to 0.6 MB; a second fsync took 0.4 ms).
                self._fsync(fd)
                if (stat.st_dev, stat.st_ino) != self._wal_id:
                    dir_fd = os.open(self.wal_path.parent, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        self._fsync(dir_fd)
                    finally:
                        os.close(dir_fd)
                    self._wal_id = (stat.st_dev, stat.st_ino)
            finally:
                os.close(fd)
            self._synced = target
            self.syncs += 1
            return True

    def run(self) -> None:
        """The syncer's loop (its thread's body): a sync at most every ``interval`` seconds."""
        next_at = self._clock() + self.interval
        while not self._wait(max(0.0, next_at - self._clock())):
            started = self._clock()
            try:
                self.sync()
            except Exception:  # the thread's boundary: log, try again at the next tick
                log.exception(
                    "durability: fsync of %s failed; answered writes may not be on disk", self.wal_path
                )
            next_at = started + self.interval

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="twomes-wal-syncer", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the thread and make the final sync (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sync()


class Database:
    """A database file; hands out transactions on one connection per worker thread.

    Each thread (uvicorn's event loop, each thread of the pool that runs the endpoints) keeps its own
    connection: opening one costs more than most requests' queries. A connection whose transaction
    could not be ended cleanly is closed and not reused.

    Durability, two modes (no request is answered before the commit that holds its write in either):

    * default (``sync_interval=None``): WAL journal with ``synchronous = FULL``: a transaction is on
      disk (fsync of the WAL) before COMMIT returns, so an answered upload or activation survives a
      power loss or an OS crash of the server. Such a loss can only lose writes not answered yet
      (the device retries them; uploads are idempotent). The price: every commit (every group of
      requests) waits for an fsync (~0.25 ms on this project's disk; ~75 us of CPU per COMMIT
      against ~8 us without it).
    * ``sync_interval=SECONDS`` (``twomes server run --sync-interval``; 0 < SECONDS <= 60):
      ``synchronous = NORMAL``, COMMIT does not wait for the disk, and a :class:`WalSyncer` thread
      fsyncs the WAL at most every SECONDS when something was committed (and once more at
      :meth:`close`). A power loss or OS crash can lose the answered writes of the last SECONDS
      (plus one fsync); the database stays consistent (whole transactions are lost, never half of
      one). Logged as a warning at start (:func:`durability_warning`).

    A crash of the server *process* (kill -9, an abort) loses nothing answered in either mode: the
    commit is in the OS page cache before the answer (host_tests/server/test_server_durability.py).
    The default stays FULL: a device that got a 2xx deletes its copy of the measurements, so a lost
    answered write is data lost for good; the bounded mode is for who states that window.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        sync_interval: float | None = None,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        self.path = Path(path)
        # The bounded-loss mode's syncer (None: synchronous = FULL); ``fsync`` is for tests.
        self.syncer: WalSyncer | None = None
        if sync_interval is not None:
            self.syncer = WalSyncer(self.path, sync_interval, fsync=fsync)
            log.warning("%s", durability_warning(sync_interval))
            self.syncer.start()
        self._local = threading.local()
        # --sync-interval (transact): groups of one in a row, and whether a unit was committed at
        # once in this turn of the event loop
        self._alone = 0
        self._turn_taken = False
        self._at_once = 0  # units committed at once since grouping stopped
        # SQLite has one writer at a time; a writer that finds the lock taken sleeps in its busy
        # handler (up to 100 ms a nap). The workers of this process queue here instead and are woken
        # at once when the writer before them commits.
        self._write_lock = threading.Lock()
        self._property_ids: dict[int, dict[str, int]] = {}
        # Units of work waiting for the next group commit (:meth:`transact`).
        self._pending: list[_Job] = []
        self.group_commits = 0  # group commits made, and the units in them
        self.grouped_units = 0

    def connect(self) -> sqlite3.Connection:
        """A new connection (the caller closes it)."""
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA synchronous = {'FULL' if self.syncer is None else 'NORMAL'}")
        if self.syncer is not None:  # checkpoints rarer (WalSyncer)
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_PAGES_BOUNDED}")
        return conn

    def sync(self) -> None:
        """In the bounded-loss mode, put what was committed on disk now (a no-op with FULL)."""
        if self.syncer is not None:
            self.syncer.sync()

    def close(self) -> None:
        """Stop the syncer with a final sync (idempotent; the connections are the threads' own)."""
        if self.syncer is not None:
            self.syncer.close()

    @asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """An ASGI lifespan for the app: the database is closed (final sync) on a clean shutdown.
        The final sync is one fsync, made once the server no longer answers anything."""
        try:
            yield
        finally:
            self.close()

    def _worker_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.connect()
            self._local.conn = conn
        return conn

    def _discard(self, conn: sqlite3.Connection) -> None:
        self._local.conn = None
        try:
            conn.close()
        except sqlite3.Error:
            pass

    def read_row(self, sql: str, params: tuple[object, ...]) -> sqlite3.Row | None:
        """The first row of one query (one statement: its own snapshot, no explicit transaction)."""
        conn = self._worker_conn()
        try:
            row: sqlite3.Row | None = conn.execute(sql, params).fetchone()
        except sqlite3.Error:
            self._discard(conn)
            raise
        return row

    def property_ids(self, conn: sqlite3.Connection, device_type_id: int) -> dict[str, int]:
        """{property name: id} of a device type. Kept once read: a type's properties are written
        with the type, in its creation's transaction, and never change."""
        ids = self._property_ids.get(device_type_id)
        if ids is None:
            rows = conn.execute(
                "SELECT id, name FROM property WHERE device_type_id = ?", (device_type_id,)
            ).fetchall()
            ids = {r[1]: r[0] for r in rows}
            if ids:
                self._property_ids[device_type_id] = ids
        return ids

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for all its queries."""
        conn = self._worker_conn()
        try:
            conn.execute("BEGIN")
        except sqlite3.Error:
            self._discard(conn)
            raise
        try:
            yield conn
        finally:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._discard(conn)

    async def transact(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(conn)`` as one atomic unit of a write transaction and return its result (or raise
        its exception) once that transaction is committed - with ``synchronous = FULL``, once it is on
        disk. For the event loop's requests (the device endpoints).

        Group commit: a unit is not committed at once but two turns of the event loop later, with
        every unit the other requests of those turns brought (the requests whose data came in
        together), in one transaction, each in its own savepoint (a unit that raises is rolled back
        alone, the others are kept), with one COMMIT and so one fsync for all; then each request is
        answered. A request alone in the server is a group of one, two turns later (a few tens of
        microseconds), without a savepoint (its transaction is its unit): whether others are coming cannot be told sooner - the requests whose data came
        in the same turn are only started in the next one, one after the other, and a count of the
        requests in flight saw each of them alone and made each wait for its own fsync. The work runs
        on the event loop (short statements on its own connection: no hand-off to a thread, which
        cost more CPU than it saved on this server's 2 cores; the loop waits for the fsync, once per
        group).

        With ``--sync-interval`` a COMMIT costs no fsync (~20-35 us of CPU here), and the two turns
        a lone request waits for its group are most of what it costs beyond the work itself. So
        after ``ALONE_GROUPS`` groups of one in a row (requests that come one at a time) a unit is its
        own transaction at once, answered with no wait; the first such unit and every ``PROBE``-th
        after it is a probe (it marks its turn of the loop, which costs the loop one more turn), and
        as soon as a second unit comes in a probe's turn (others' requests whose data came in
        together), units are grouped again. Measured against the framework answering constants (uploads): always grouped
        0.72-0.77x at 1 client and 0.96-1.00x at 10; always at once 0.75-0.91x and 0.73-0.78x (a
        commit per request: more WAL pages written, more checkpoints).
        """
        loop = asyncio.get_running_loop()
        if self.syncer is not None and self._alone >= ALONE_GROUPS:
            if not self._turn_taken:
                self._at_once += 1
                if self._at_once % PROBE == 1:  # a probe (the first at once, then every PROBE-th)
                    self._turn_taken = True
                    loop.call_soon(self._turn_over)
                with self.write() as conn:
                    return work(conn)
            self._alone = self._at_once = 0  # a second unit in a probe's turn: group again
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((work, future))
        if len(self._pending) == 1:
            loop.call_soon(loop.call_soon, self._commit_pending)
        return await future

    def _turn_over(self) -> None:
        self._turn_taken = False

    def _commit_pending(self) -> None:
        jobs, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
        if self._pending:  # more than a group's worth: the rest in the next group
            asyncio.get_running_loop().call_soon(self._commit_pending)
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            with self.write() as conn:
                if len(jobs) == 1:  # alone: the transaction is its unit (no savepoint to pay for)
                    work, future = jobs[0]
                    try:
                        outcomes.append((future, work(conn), None))
                    except Exception as exc:
                        outcomes.append((future, None, exc))
                        raise _Alone from exc  # write() rolls the transaction back
                else:
                    for work, future in jobs:
                        conn.execute("SAVEPOINT unit")
                        try:
                            result = work(conn)
                        except Exception as exc:  # this request's error (HTTP error or a bug): its unit only
                            conn.execute("ROLLBACK TO unit")
                            conn.execute("RELEASE unit")
                            outcomes.append((future, None, exc))
                        else:
                            conn.execute("RELEASE unit")
                            outcomes.append((future, result, None))
            self.group_commits += 1
            self.grouped_units += len(jobs)
            self._alone = self._alone + 1 if len(jobs) == 1 else 0
        except _Alone:  # a group of one whose unit raised: rolled back, its error is its answer
            pass
        except Exception as exc:  # the transaction itself failed (BEGIN/COMMIT/savepoint): all of them
            log.exception("write transaction failed")
            outcomes = [(future, None, exc) for _, future in jobs]
        for future, result, error in outcomes:
            if future.cancelled():  # the request is gone (client disconnected); its unit is committed
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any exception."""
        conn = self._worker_conn()
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:
                self._discard(conn)
                raise
            try:
                yield conn
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    self._discard(conn)
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error:
                self._discard(conn)  # its transaction is still open: never reuse it
                raise
            if self.syncer is not None:
                self.syncer.committed()

    def secret_recorded(self) -> bool:
        """Whether the database (if it exists) already knows its server secret."""
        if not self.path.exists():
            return False
        conn = self.connect()
        try:
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            return bool(has_meta) and bool(
                conn.execute("SELECT 1 FROM meta WHERE key = 'secret_check'").fetchone()
            )
        finally:
            conn.close()

    def initialise(self, key: bytes | None = None) -> str | None:
        """Create the schema and seed data if the database is new, or migrate a schema-1 database.

        With ``key`` (the server secret) the database remembers a check value of it on first use and
        refuses another key later (:class:`SecretError`): activation tokens hashed with one key are
        not found with another. Returns the first admin token when one was created (empty database),
        else None.

        In the bounded-loss mode the result is fsynced before this returns.
        """
        token = self._initialise(key)
        # On disk before anything is built on it (the first admin token goes into a file).
        self.sync()
        return token

    def _initialise(self, key: bytes | None = None) -> str | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self.connect()
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        finally:
            conn.close()
        with self.write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
                if tables:
                    raise SchemaError(
                        f"{self.path} is an SQLite database, but not a Twomes reference server one"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                _seed_device_types(conn)
            elif version == 1:
                for statement in _MIGRATE_1_TO_2.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path}: unknown schema version {version} (expected {SCHEMA_VERSION})"
                )
            _add_release_signing(conn)
            if key is not None:
                check = secret_check(key)
                row = conn.execute("SELECT value FROM meta WHERE key = 'secret_check'").fetchone()
                if row is None:
                    keyed = conn.execute(
                        "SELECT count(*) FROM device WHERE activation_token_hash LIKE 'k1:%'"
                    ).fetchone()[0]
                    if keyed:
                        raise SecretError(
                            f"{self.path} has keyed activation hashes but no record of its secret"
                        )
                    conn.execute("INSERT INTO meta (key, value) VALUES ('secret_check', ?)", (check,))
                elif not hmac.compare_digest(row["value"], check):
                    raise SecretError(
                        f"the server secret does not belong to {self.path} (its devices could not activate)"
                    )
            if conn.execute("SELECT count(*) FROM admin_token WHERE revoked_on IS NULL").fetchone()[0] == 0:
                return create_admin_token(conn)
        return None


def _add_release_signing(conn: sqlite3.Connection) -> None:
    """Signed releases (release.manifest, release.signature): added to a database made before them,
    whatever its schema version (the columns are optional: such releases are unsigned)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(release)")}
    for column in ("manifest", "signature"):
        if column not in have:
            conn.execute(f"ALTER TABLE release ADD COLUMN {column} TEXT")


def _seed_device_types(conn: sqlite3.Connection) -> None:
    create_device_type(conn, GENERIC_TEST_TYPE, GENERIC_TEST_DISPLAY_NAME, "", list(GENERIC_TEST_PROPERTIES))


def create_device_type(
    conn: sqlite3.Connection,
    name: str,
    display_name: str,
    installation_manual_url: str,
    properties: list[tuple[str, str]],
) -> int:
    cur = conn.execute(
        "INSERT INTO device_type (name, display_name, installation_manual_url) VALUES (?, ?, ?)",
        (name, display_name, installation_manual_url),
    )
    type_id = int(cur.lastrowid or 0)
    conn.executemany(
        "INSERT INTO property (device_type_id, name, unit) VALUES (?, ?, ?)",
        [(type_id, prop, unit) for prop, unit in properties],
    )
    return type_id


def create_admin_token(conn: sqlite3.Connection) -> str:
    cur = conn.execute("INSERT INTO admin_token (token_hash, created_on) VALUES ('', ?)", (utcnow(),))
    ident = int(cur.lastrowid or 0)
    token, token_hash = new_token(ident)
    conn.execute("UPDATE admin_token SET token_hash = ? WHERE id = ?", (token_hash, ident))
    return token


PSEUDONYM_MIN = 800000
PSEUDONYM_MAX = 899999


def free_pseudonym(conn: sqlite3.Connection) -> int:
    """A random Twomes account pseudonym (800000..899999) not in use yet."""
    used = {r[0] for r in conn.execute("SELECT pseudonym FROM account WHERE pseudonym IS NOT NULL")}
    if len(used) > (PSEUDONYM_MAX - PSEUDONYM_MIN) // 2:
        free = [p for p in range(PSEUDONYM_MIN, PSEUDONYM_MAX + 1) if p not in used]
        if not free:
            raise ValueError("no account pseudonym left")
        return secrets.choice(free)
    while True:
        candidate = PSEUDONYM_MIN + secrets.randbelow(PSEUDONYM_MAX - PSEUDONYM_MIN + 1)
        if candidate not in used:
            return candidate
