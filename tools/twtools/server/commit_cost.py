"""What a durable COMMIT costs on a disk: the figures behind ``twomes server run --sync-interval``.

    python -m twtools.server.commit_cost [--dir DIR] [--commits N]

Run it on the file system that holds the database (``--dir``, default the current directory). Prints,
for one small write transaction (BEGIN IMMEDIATE, one INSERT, COMMIT) in WAL mode, the CPU and wall
time per COMMIT with ``synchronous = FULL`` (the server's default) and ``NORMAL`` (the bounded-loss
mode), then what the syncer's alternatives cost after 20 such commits: an fsync of the WAL file (what
db.WalSyncer does) and ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its own. CPU time is the
process's (user + system: the kernel's work for an fsync counts).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

ROW = "x" * 100


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    return conn


def _commit(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t (v) VALUES (?)", (ROW,))
    conn.execute("COMMIT")


def per_commit(path: Path, synchronous: str, commits: int) -> tuple[float, float]:
    """(CPU, wall) seconds per small write transaction."""
    conn = _connect(path, synchronous)
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(commits):
            _commit(conn)
        return (time.process_time() - cpu) / commits, (time.perf_counter() - wall) / commits
    finally:
        conn.close()


def sync_costs(path: Path, rounds: int = 50) -> tuple[list[float], list[float]]:
    """Wall seconds of an fsync of the WAL, and of a passive checkpoint, each after 20 commits."""
    conn = _connect(path, "NORMAL")
    other = _connect(path, "NORMAL")
    fsyncs: list[float] = []
    checkpoints: list[float] = []
    try:
        for _ in range(rounds):
            for _ in range(20):
                _commit(conn)
            start = time.perf_counter()
            fd = os.open(f"{path}-wal", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsyncs.append(time.perf_counter() - start)
        for _ in range(rounds):
            for _ in range(20):
                _commit(conn)
            start = time.perf_counter()
            other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            checkpoints.append(time.perf_counter() - start)
    finally:
        conn.close()
        other.close()
    return fsyncs, checkpoints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twtools.server.commit_cost", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where to make the test databases")
    parser.add_argument("--commits", type=int, default=2000, help="commits per mode (default 2000)")
    args = parser.parse_args(argv)
    if args.commits < 1:
        parser.error("--commits must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="commit-cost-", dir=args.dir))
    try:
        for synchronous in ("FULL", "NORMAL"):
            cpu, wall = per_commit(work / f"{synchronous}.sqlite3", synchronous, args.commits)
            print(
                f"synchronous = {synchronous:6}: {cpu * 1e6:6.1f} us CPU, {wall * 1e6:6.1f} us wall per COMMIT"
            )
        fsyncs, checkpoints = sync_costs(work / "sync.sqlite3")
        for name, values in (("fsync of the WAL", fsyncs), ("wal_checkpoint(PASSIVE)", checkpoints)):
            print(
                f"{name} after 20 commits: median {statistics.median(values) * 1e6:.0f} us, "
                f"max {max(values) * 1e6:.0f} us"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
