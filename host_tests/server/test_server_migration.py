"""A database made by the schema-1 server (before issue #12) is migrated in place at start."""

from __future__ import annotations

import hashlib
import sqlite3
import types
from pathlib import Path

import httpx

from twtools.server.testing import ReferenceServer

# The schema-1 storage module as it was (git show 5536759:tools/twtools/server/db.py), kept as text.
SCHEMA1 = Path(__file__).with_name("schema1_db.py.txt")


def _schema1_database(path: Path) -> str:
    module = types.ModuleType("schema1_db")
    exec(compile(SCHEMA1.read_text(), str(SCHEMA1), "exec"), module.__dict__)  # noqa: S102
    token: str = module.Database(path).initialise()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(
            "INSERT INTO account (name, session_token_hash, created_on) VALUES ('old owner', '', '2026-01-01T00:00:00+00:00')"
        )
        plain = hashlib.sha256(b"3375550652").hexdigest()  # schema 1 kept activation tokens as plain SHA-256
        conn.execute(
            "INSERT INTO device (name, device_type_id, activation_token_hash, account_id, created_on)"
            " VALUES ('TWOMES-0A0B0C', 1, ?, 1, '2026-01-01T00:00:00+00:00')",
            (plain,),
        )
        conn.execute("INSERT INTO upload (device_id, server_time, device_time, size) VALUES (1, 'x', 0, 4)")
        for ts, value in ((1795348243, "1"), (1795348243, "again"), (-2208988800, "1900"), (1795348300, "2")):
            conn.execute(
                "INSERT INTO measurement (device_id, property_id, upload_id, timestamp, value) VALUES (1, 1, 1, ?, ?)",
                (ts, value),
            )
    finally:
        conn.close()
    return token


def test_a_schema_1_database_is_migrated(tmp_path: Path) -> None:
    work = tmp_path / "srv"
    work.mkdir()
    token = _schema1_database(work / "twomes.sqlite3")
    (work / "admin-token").write_text(token + "\n")
    with ReferenceServer(work, access_log=False) as srv:
        client = srv.client
        # Duplicates and the time before 1970 are gone; the rest reads back (it failed with 500 before).
        assert [(m["timestamp"], m["value"]) for m in client.measurements("TWOMES-0A0B0C")] == [
            ("2026-11-22T11:50:43Z", "1"),
            ("2026-11-22T11:51:40Z", "2"),
        ]
        # The old plain hash still activates, and is replaced by the keyed one.
        with httpx.Client(base_url=srv.url, trust_env=False, timeout=30) as http:
            r = http.post("/device/activate", json={"activation_token": "3375550652"})
            assert r.status_code == 200, r.text
        conn = sqlite3.connect(srv.db_path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
            (stored,) = conn.execute("SELECT activation_token_hash FROM device").fetchone()
            (pseudonym,) = conn.execute("SELECT pseudonym FROM account").fetchone()
        finally:
            conn.close()
        assert stored.startswith("k1:") and 800000 <= pseudonym <= 899999
        assert [a["name"] for a in client.accounts()] == ["old owner"]
