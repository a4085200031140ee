"""The results store: one SQLite file (``results.db``), the source of truth for every report.

One row per run, keyed by the hash of its resolved config and written in a single transaction after
the run completes, so an interrupted benchmark leaves only whole rows and a rerun skips them. The exact
split indices are stored once per distinct split (``splits`` table) and referenced by hash.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unlearnkit.errors import UnlearnkitError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    dataset TEXT NOT NULL,
    forget TEXT NOT NULL,
    model TEXT NOT NULL,
    method TEXT NOT NULL,
    seed INTEGER NOT NULL,
    scenario_json TEXT NOT NULL,
    params_json TEXT NOT NULL,
    config_json TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    splits_hash TEXT,
    created_at TEXT NOT NULL,
    versions_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS splits (hash TEXT PRIMARY KEY, splits_json TEXT NOT NULL);
"""


class ResultsStore:
    """SQLite-backed run records. Only the driver process writes to it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UnlearnkitError(f"cannot create the results directory {self.path.parent}: {e.strerror}") from None
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise UnlearnkitError(f"results store {self.path} is not writable")
        try:
            with self._connect() as con:
                con.executescript(_SCHEMA)
                row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) != SCHEMA_VERSION:
                    raise UnlearnkitError(
                        f"{self.path} has schema version {row[0]}; this unlearnkit writes version {SCHEMA_VERSION}"
                    )
        except sqlite3.DatabaseError as e:
            raise UnlearnkitError(f"{self.path} is not a usable unlearnkit results database ({e})") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30)
        try:
            with con:  # one transaction: commit on success, roll back on error
                yield con
        finally:
            con.close()

    def has(self, key: str) -> bool:
        """Whether a run with this key is stored (ok or failed)."""
        with self._connect() as con:
            return con.execute("SELECT 1 FROM runs WHERE key=?", (key,)).fetchone() is not None

    def status(self, key: str) -> str | None:
        """``"ok"``, ``"failed"`` or ``None`` if absent."""
        with self._connect() as con:
            row = con.execute("SELECT status FROM runs WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, record: Any, splits: dict[str, Any] | None = None) -> None:
        """Insert (or replace) one run record, and its splits, in one transaction."""
        from unlearnkit.experiments.record import RunRecord

        if isinstance(record, RunRecord):  # interim adapter until the typed store lands
            splits = record.splits
            record = {k: v for k, v in record.as_dict().items() if v is not None}
        sc = record["scenario"]
        now = datetime.now(UTC).isoformat(timespec="seconds")
        row = (
            record["key"], record["status"], record.get("error"), sc["dataset"], sc["forget"], record["model"],
            record["method"], int(record["seed"]), json.dumps(sc, sort_keys=True),
            json.dumps(record.get("params", {}), sort_keys=True, default=str),
            json.dumps(record.get("config", {}), sort_keys=True, default=str),
            json.dumps(record.get("metrics", {}), sort_keys=True), record.get("splits_hash"),
            record.get("created_at", now), json.dumps(record.get("versions", {}), sort_keys=True),
        )  # fmt: skip
        with self._connect() as con:
            if splits is not None and record.get("splits_hash"):
                con.execute("INSERT OR IGNORE INTO splits VALUES (?, ?)", (record["splits_hash"], json.dumps(splits)))
            con.execute(f"INSERT OR REPLACE INTO runs VALUES ({','.join('?' * len(row))})", row)

    def runs(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every stored run as a record dict (optionally only ``ok`` or ``failed`` ones)."""
        q = "SELECT * FROM runs" + (" WHERE status=?" if status else "") + " ORDER BY created_at, key"
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            rows = con.execute(q, (status,) if status else ()).fetchall()
        return [
            {
                "key": r["key"],
                "status": r["status"],
                "error": r["error"],
                "model": r["model"],
                "method": r["method"],
                "seed": r["seed"],
                "scenario": json.loads(r["scenario_json"]),
                "params": json.loads(r["params_json"]),
                "config": json.loads(r["config_json"]),
                "metrics": json.loads(r["metrics_json"]),
                "splits_hash": r["splits_hash"],
                "created_at": r["created_at"],
                "versions": json.loads(r["versions_json"]),
            }
            for r in rows
        ]

    def splits(self, splits_hash: str) -> dict[str, Any] | None:
        """The stored split indices for ``splits_hash``."""
        with self._connect() as con:
            row = con.execute("SELECT splits_json FROM splits WHERE hash=?", (splits_hash,)).fetchone()
        return None if row is None else json.loads(row[0])

    def __len__(self) -> int:
        with self._connect() as con:
            return int(con.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
