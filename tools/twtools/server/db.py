"""SQLite storage of the reference server (stdlib ``sqlite3`` only).

One database file holds everything except the firmware images (those live in the files directory).
The schema is created on first start; the journal is WAL so readers never block the single writer.
Every request opens its own short-lived connection (cheap for SQLite) and every write runs inside a
``BEGIN IMMEDIATE`` transaction, so concurrent writers are serialised by SQLite itself (``busy_timeout``
makes them wait instead of failing).

Secrets are never stored: session and admin tokens are kept as SHA-256 hashes, and so are the
devices' activation tokens (a lookup by hash is as good as a lookup by value).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

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
    created_on  TEXT NOT NULL
);
CREATE TABLE account (
    id                  INTEGER PRIMARY KEY,
    name                TEXT NOT NULL,
    session_token_hash  TEXT NOT NULL,
    created_on          TEXT NOT NULL
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
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


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
    return int(raw)


def token_matches(token: str, stored_hash: str | None) -> bool:
    return stored_hash is not None and hmac.compare_digest(hash_secret(token), stored_hash)


# ------------------------------------------------------------------------------------------ connection


class Database:
    """A database file; hands out short-lived connections and transactions."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for all its queries."""
        conn = self.connect()
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("ROLLBACK")
        finally:
            conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any exception."""
        conn = self.connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def initialise(self) -> str | None:
        """Create the schema and seed data if the database is new.

        Returns the first admin token when one was created (empty database), else None.
        """
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
            elif version != SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path}: unknown schema version {version} (expected {SCHEMA_VERSION})"
                )
            _add_release_signing(conn)
            if conn.execute("SELECT count(*) FROM admin_token").fetchone()[0] == 0:
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
