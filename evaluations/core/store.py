"""The SQLite result store: one row per cell, committed in one transaction as soon as the cell finishes.

WAL mode and a busy timeout let two runs share a store; an ``events`` table records every start and
finish, so a test (or a person) can count how often each cell was computed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    suite TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    config TEXT NOT NULL,
    record TEXT,
    samples TEXT,
    error TEXT,
    time_s REAL,
    finished_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    event TEXT NOT NULL,
    pid INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS suites (
    name TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    quick INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
"""


class ResultStore:
    """A results database at ``path`` (created when missing).

    :param path: The SQLite file, e.g. ``DIR/results.db``.
    :param timeout: Seconds to wait for a lock held by another run.
    """

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _tx(self, statements: list[tuple[str, tuple]]) -> None:
        """Run ``statements`` in one immediate transaction."""
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                cur.execute(sql, args)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ writes
    def save_suite(self, name: str, text: str, quick: bool) -> None:
        self._tx([("INSERT OR REPLACE INTO suites VALUES (?, ?, ?, ?)", (name, text, int(quick), time.time()))])

    def mark_started(self, key: str) -> None:
        self._tx([("INSERT INTO events (key, event, pid, at) VALUES (?, 'start', ?, ?)", (key, os.getpid(), time.time()))])

    def commit_cell(self, key: str, suite: str, config: dict, record: dict, samples: dict, time_s: float) -> None:
        """Store a finished cell and its 'finish' event atomically."""
        self._tx([
            ("INSERT OR REPLACE INTO cells VALUES (?, ?, 'done', ?, ?, ?, NULL, ?, ?)",
             (key, suite, json.dumps(config, sort_keys=True), json.dumps(record), json.dumps(samples), time_s,
              time.time())),
            ("INSERT INTO events (key, event, pid, at) VALUES (?, 'finish', ?, ?)", (key, os.getpid(), time.time())),
        ])

    def commit_failure(self, key: str, suite: str, config: dict, error: str) -> None:
        """Record a failed cell with its error; it is retried on the next run."""
        self._tx([
            ("INSERT OR REPLACE INTO cells VALUES (?, ?, 'failed', ?, NULL, NULL, ?, NULL, ?)",
             (key, suite, json.dumps(config, sort_keys=True), error, time.time())),
            ("INSERT INTO events (key, event, pid, at) VALUES (?, 'fail', ?, ?)", (key, os.getpid(), time.time())),
        ])

    # ------------------------------------------------------------------ reads
    def is_done(self, key: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM cells WHERE key = ? AND status = 'done'", (key,)).fetchone()
        return row is not None

    def done_keys(self) -> set[str]:
        return {k for (k,) in self.conn.execute("SELECT key FROM cells WHERE status = 'done'")}

    def cells(self, suite: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Stored cells (optionally of one suite/status), oldest first."""
        sql, args = "SELECT key, suite, status, config, record, samples, error, time_s FROM cells", []
        clauses = []
        if suite is not None:
            clauses.append("suite = ?")
            args.append(suite)
        if status is not None:
            clauses.append("status = ?")
            args.append(status)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY finished_at, key"
        out = []
        for key, suite_name, st, config, record, samples, error, time_s in self.conn.execute(sql, args):
            out.append({"key": key, "suite": suite_name, "status": st, "config": json.loads(config),
                        "record": json.loads(record) if record else None,
                        "samples": json.loads(samples) if samples else None, "error": error, "time_s": time_s})
        return out

    def suites(self) -> list[dict[str, Any]]:
        return [{"name": n, "text": t, "quick": bool(q)}
                for n, t, q in self.conn.execute("SELECT name, text, quick FROM suites ORDER BY updated_at")]

    def finish_counts(self) -> dict[str, int]:
        """How many times each cell finished computing (1 each unless --force was used)."""
        return dict(self.conn.execute("SELECT key, COUNT(*) FROM events WHERE event = 'finish' GROUP BY key"))

    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]
