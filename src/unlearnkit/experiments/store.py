"""The results store: one SQLite file (``results.db``), the source of truth for every report.

One row per run (a :class:`~unlearnkit.experiments.record.RunRecord`), keyed by the hash of its resolved
config and written in a single transaction after the run completes, so an interrupted benchmark leaves
only whole rows and a rerun skips them. The exact split indices are stored once per distinct split
(``splits`` table) and referenced by hash.

What a store promises:

* **Nothing written until there is a record.** A store opened for writing creates its file on the first
  :meth:`ResultsStore.put`, so a command that fails before any run finishes leaves no ``results.db``.
* **Strict JSON.** Metrics go through :func:`~unlearnkit.experiments.record.encode_metrics` (a NaN or
  infinite value becomes ``NotComputed``); in scenario, params, config and versions a non-finite float is
  stored as the string ``"nan"``, ``"inf"`` or ``"-inf"`` (the run already happened: its row is kept, and
  the JSON stays readable by any strict parser, e.g. SQLite's ``json_extract``).
* **Old stores open.** Schema version 1 (before ``setting``, ``needs`` and ``flags``) is read as is; its
  rows get the setting inferred (:func:`infer_setting`) and empty needs and flags. Version 2 (before the
  tuning tables) reads as a store without tunings. The first write migrates either to version 3 in the
  same transaction as that write.
* **Tuning history.** ``unlearnkit tune`` records each finished trial (``tune_trials``: study, trial number,
  state, objective, parameters, what it measured) and each study (``tune_studies``: method, settings,
  proxy requests, defaults and the best parameters) beside the runs.
* **Read-only means read-only.** ``ResultsStore(path, readonly=True)`` opens the file with SQLite's
  ``mode=ro``; ``unlearnkit report`` never changes the database.
* **One-line errors.** Every SQLite or JSON problem after opening (a damaged page, an unknown schema
  version, a truncated value in a row, a database copied without its journal) is a :class:`StoreError`
  naming the file; a database that is not an unlearnkit store is refused without being changed.

:func:`writer_lock` is the advisory lock that keeps a second process from writing into the same output
folder while one runs.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unlearnkit.errors import StoreError
from unlearnkit.experiments.record import RunRecord, decode_metrics, encode_metrics

SCHEMA_VERSION = 3
#: schema versions this unlearnkit reads (a version-1 or -2 store is migrated by its first write)
READABLE_VERSIONS = (1, 2, 3)
#: the advisory lock file a writing process holds inside its output folder
LOCK_NAME = ".unlearnkit.lock"

_CREATE = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS runs (
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
        versions_json TEXT NOT NULL,
        setting INTEGER,
        needs_json TEXT,
        flags_json TEXT
    )""",
    "CREATE TABLE IF NOT EXISTS splits (hash TEXT PRIMARY KEY, splits_json TEXT NOT NULL)",
)
#: the tables version 3 adds: the tuning history of ``unlearnkit tune``
_V3_TABLES = (
    """CREATE TABLE IF NOT EXISTS tune_trials (
        study TEXT NOT NULL,
        number INTEGER NOT NULL,
        method TEXT NOT NULL,
        state TEXT NOT NULL,
        value REAL,
        params_json TEXT NOT NULL,
        info_json TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (study, number)
    )""",
    """CREATE TABLE IF NOT EXISTS tune_studies (
        study TEXT PRIMARY KEY,
        method TEXT NOT NULL,
        info_json TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
)
#: the columns version 2 adds to version 1's ``runs`` (NULL in migrated rows: inferred on read)
_V2_COLUMNS = (("setting", "INTEGER"), ("needs_json", "TEXT"), ("flags_json", "TEXT"))
_ROW_COLUMNS = (
    "key", "status", "error", "dataset", "forget", "model", "method", "seed", "scenario_json", "params_json",
    "config_json", "metrics_json", "splits_hash", "created_at", "versions_json", "setting", "needs_json", "flags_json",
)  # fmt: skip


def infer_setting(scenario: Mapping[str, Any], params: Mapping[str, Any], config: Mapping[str, Any]) -> int:
    """The setting of a row stored without one: ``config.setting``, else 3 for a ``concept:`` request, 2 for a
    run with ``shots`` (few-shot, no retain data), else 1."""
    setting = config.get("setting")
    if isinstance(setting, int) and not isinstance(setting, bool) and setting in (1, 2, 3):
        return setting
    if str(scenario.get("forget", "")).startswith("concept:"):
        return 3
    return 2 if "shots" in params else 1


def _finite(v: Any) -> Any:
    """``v`` with every non-finite float replaced by its string (``"nan"``, ``"inf"``, ``"-inf"``)."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, Mapping):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def _strict_json(v: Any) -> str:
    """Strict JSON (no NaN/inf tokens) of a scenario, params, config or versions mapping."""
    return json.dumps(_finite(v), sort_keys=True, allow_nan=False, default=str)


class ResultsStore:
    """SQLite-backed run records. Only the driver process writes to it.

    Args:
        path: the database file (``results.db``); for writing, created on the first :meth:`put`.
        readonly: open an existing store for reading only (SQLite ``mode=ro``); :meth:`put` is refused.

    Raises:
        StoreError: the file is not an unlearnkit store, has an unknown schema version, is damaged or
            cannot be written.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._version: int | None = None  # None: no database yet (writing: the first put creates it)
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"no results store at {self.path}")
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the results directory {self.path.parent}: {e.strerror}") from None
            if self.path.exists() and not os.access(self.path, os.W_OK):
                raise StoreError(f"results store {self.path} is not writable")
        self._open()

    # -- opening and checking ---------------------------------------------------------------------------------

    def _open(self) -> int | None:
        """Check the file (when there is one) and remember its schema version."""
        if self._version is not None:
            return self._version
        if not self.readonly and (not self.path.exists() or self.path.stat().st_size == 0):
            return None  # nothing stored yet
        try:
            with self._connection() as con:
                self._version = self._check(con)
        except sqlite3.Error as e:
            raise StoreError(self._describe(e, opening=True)) from None
        return self._version

    def _check(self, con: sqlite3.Connection) -> int:
        """The schema version of an unlearnkit store; refuses anything else (reads only, changes nothing)."""
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = [t for t in ("meta", "runs") if t not in tables]
        if missing:
            raise StoreError(
                f"{self.path} is not an unlearnkit results store (no {' or '.join(missing)} table); left unchanged"
            )
        row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            raise StoreError(f"{self.path} is not an unlearnkit results store (no schema version); left unchanged")
        try:
            version = int(str(row[0]))
        except ValueError:
            version = None
        if version not in READABLE_VERSIONS:
            newer = " (written by a newer unlearnkit?)" if version is not None and version > SCHEMA_VERSION else ""
            raise StoreError(
                f"{self.path} has schema version {row[0]}{newer}; this unlearnkit reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}"
            )
        if not self.readonly:  # a damaged page fails here, before any work, not at the first write after a run
            result = con.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                raise StoreError(f"{self.path} is damaged ({result[0] if result else 'no integrity report'})")
        return version

    @contextmanager
    def _connection(self, *, create: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode (:meth:`put` opens its transaction explicitly)."""
        mode = "ro" if self.readonly else ("rwc" if create else "rw")
        uri = f"{self.path.resolve().as_uri()}?mode={mode}"
        con = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn SQLite and JSON errors into one-line :class:`StoreError` s naming the file."""
        try:
            yield
        except StoreError:
            raise
        except sqlite3.Error as e:
            raise StoreError(self._describe(e)) from None
        except (ValueError, TypeError, OverflowError) as e:  # a JSON value or a number SQLite cannot hold
            raise StoreError(f"results store {self.path}: {e}") from None

    def _describe(self, e: sqlite3.Error, *, opening: bool = False) -> str:
        """One line for a SQLite error, with what to do about the known ones."""
        msg = str(e)
        if "readonly" in msg and self.readonly and Path(f"{self.path}-journal").exists():
            return (
                f"results store {self.path} has an unfinished transaction ({self.path.name}-journal) that a "
                "read-only open cannot roll back; rerun the command that wrote it (a write rolls it back), then report"
            )
        if "malformed" in msg:
            return (
                f"results store {self.path} is damaged ({msg}); was it copied while being written, or without "
                "its -journal/-wal file? restore a good copy or write to another --out"
            )
        if opening:
            return f"{self.path} is not a usable unlearnkit results database ({msg})"
        return f"results store {self.path}: {msg}"

    # -- reading ----------------------------------------------------------------------------------------------

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        if self._open() is None:
            return []
        with self._guard(), self._connection() as con:
            con.row_factory = sqlite3.Row
            return con.execute(sql, args).fetchall()

    def has(self, key: str) -> bool:
        """Whether a run with this key is stored (ok or failed)."""
        return self.status(key) is not None

    def status(self, key: str) -> str | None:
        """``"ok"``, ``"failed"`` or ``None`` if absent."""
        rows = self._query("SELECT status FROM runs WHERE key=?", (key,))
        return rows[0]["status"] if rows else None

    def records(self, status: str | None = None) -> list[RunRecord]:
        """Every stored run as a :class:`RunRecord` (optionally only ``ok`` or ``failed`` ones), oldest first."""
        if status not in (None, "ok", "failed"):
            raise StoreError(f"status must be 'ok' or 'failed', got {status!r}")
        q = "SELECT * FROM runs" + (" WHERE status=?" if status else "") + " ORDER BY created_at, key"
        rows = self._query(q, (status,) if status else ())
        with self._guard():
            return [self._record(r) for r in rows]

    def runs(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every stored run as the dict reports read (:meth:`RunRecord.as_dict`)."""
        return [r.as_dict() for r in self.records(status)]

    def splits(self, splits_hash: str) -> dict[str, Any] | None:
        """The stored split indices for ``splits_hash``."""
        rows = self._query("SELECT splits_json FROM splits WHERE hash=?", (splits_hash,))
        if not rows:
            return None
        return self._json(rows[0]["splits_json"], f"splits {splits_hash}", dict)

    def __len__(self) -> int:
        rows = self._query("SELECT COUNT(*) AS n FROM runs")
        return int(rows[0]["n"]) if rows else 0

    def _json(self, text: Any, where: str, kind: type) -> Any:
        """Decode one stored JSON value; a truncated or mistyped one is a one-line error naming the row."""
        try:
            value = json.loads(text)
        except (TypeError, ValueError) as e:
            raise StoreError(f"results store {self.path}: {where} is not valid JSON ({e}); damaged row") from None
        if not isinstance(value, kind):
            raise StoreError(
                f"results store {self.path}: {where} holds a JSON {type(value).__name__}, expected {kind.__name__}"
            )
        return value

    def _record(self, r: sqlite3.Row) -> RunRecord:
        """One row as a record; a version-1 row (no setting/needs/flags columns, or NULL) gets them inferred."""
        key = r["key"]
        cols = set(r.keys())
        scenario = self._json(r["scenario_json"], f"run {key}: scenario_json", dict)
        params = self._json(r["params_json"], f"run {key}: params_json", dict)
        config = self._json(r["config_json"], f"run {key}: config_json", dict)
        try:
            metrics = decode_metrics(r["metrics_json"])
        except (TypeError, ValueError) as e:
            raise StoreError(f"results store {self.path}: run {key}: metrics_json is not valid JSON ({e})") from None
        setting = r["setting"] if "setting" in cols else None
        needs = r["needs_json"] if "needs_json" in cols else None
        flags = r["flags_json"] if "flags_json" in cols else None
        return RunRecord(
            key=key, scenario=scenario, model=r["model"], method=r["method"], seed=int(r["seed"]),
            status=r["status"], error=r["error"], params=params, config=config, metrics=metrics,
            setting=(int(setting) if setting is not None else None) if needs is not None  # a v2 row: as written
            else infer_setting(scenario, params, config),
            needs=tuple(map(str, self._json(needs, f"run {key}: needs_json", list))) if needs is not None else (),
            flags=tuple(map(str, self._json(flags, f"run {key}: flags_json", list))) if flags is not None else (),
            splits_hash=r["splits_hash"], created_at=r["created_at"],
            versions=self._json(r["versions_json"], f"run {key}: versions_json", dict),
        )  # fmt: skip

    # -- writing ----------------------------------------------------------------------------------------------

    def put(self, record: RunRecord) -> None:
        """Insert (or replace) one run record, and its splits, in one transaction.

        The first put creates the database (or migrates a version-1/2 store) in that same transaction.
        """
        if not isinstance(record, RunRecord):
            raise TypeError(f"ResultsStore.put takes a RunRecord, got {type(record).__name__}")
        with self._guard():
            row = self._row(record)

        def write(con: sqlite3.Connection) -> None:
            if record.splits is not None and record.splits_hash:
                con.execute(
                    "INSERT OR IGNORE INTO splits VALUES (?, ?)",
                    (record.splits_hash, json.dumps(record.splits, allow_nan=False)),
                )
            con.execute(f"INSERT OR REPLACE INTO runs ({', '.join(_ROW_COLUMNS)}) VALUES ({', '.join('?' * len(row))})",
                        row)  # fmt: skip

        self._write(write)

    def put_trial(
        self, study: str, number: int, method: str, state: str, value: float | None, params: Mapping[str, Any],
        info: Mapping[str, Any],
    ) -> None:  # fmt: skip
        """Insert (or replace) one finished tuning trial (``tune_trials``) in one transaction."""
        with self._guard():
            now = datetime.now(UTC).isoformat(timespec="seconds")
            v = None if value is None or not math.isfinite(float(value)) else float(value)
            row = (study, int(number), method, state, v, _strict_json(dict(params)), _strict_json(dict(info)), now)
        self._write(lambda con: con.execute("INSERT OR REPLACE INTO tune_trials VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row))

    def put_study(self, study: str, method: str, info: Mapping[str, Any]) -> None:
        """Insert (or replace) what a tuning study is (``tune_studies``): settings, proxies, defaults, best."""
        with self._guard():
            row = (study, method, _strict_json(dict(info)), datetime.now(UTC).isoformat(timespec="seconds"))
        self._write(lambda con: con.execute("INSERT OR REPLACE INTO tune_studies VALUES (?, ?, ?, ?)", row))

    def trials(self, study: str | None = None) -> list[dict[str, Any]]:
        """The stored tuning trials (all, or one study's), by study then trial number; none before version 3."""
        if (self._open() or 0) < 3:
            return []
        q = "SELECT * FROM tune_trials" + (" WHERE study=?" if study else "") + " ORDER BY study, number"
        rows = self._query(q, (study,) if study else ())
        return [
            {"study": r["study"], "number": int(r["number"]), "method": r["method"], "state": r["state"],
             "value": r["value"], "params": self._json(r["params_json"], f"trial {r['study']}#{r['number']}", dict),
             "info": self._json(r["info_json"], f"trial {r['study']}#{r['number']}", dict),
             "created_at": r["created_at"]}
            for r in rows
        ]  # fmt: skip

    def studies(self) -> list[dict[str, Any]]:
        """The stored tuning studies (method and info), by name; none before version 3."""
        if (self._open() or 0) < 3:
            return []
        rows = self._query("SELECT * FROM tune_studies ORDER BY study")
        return [{"study": r["study"], "method": r["method"], "updated_at": r["updated_at"],
                 **self._json(r["info_json"], f"study {r['study']}", dict)} for r in rows]  # fmt: skip

    def _write(self, write: Any) -> None:
        """Run ``write(connection)`` in one transaction, creating or migrating the store first."""
        if self.readonly:
            raise StoreError(f"results store {self.path} is open read-only")
        self._open()
        new_file = not self.path.exists()
        try:
            with self._guard(), self._connection(create=True) as con:
                con.execute("BEGIN IMMEDIATE")
                try:
                    self._prepare(con)
                    write(con)
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                    raise
        except BaseException:
            if new_file:  # the file this put created holds nothing: leave no empty store behind
                for p in (self.path, Path(f"{self.path}-journal")):
                    p.unlink(missing_ok=True)
            raise
        self._version = SCHEMA_VERSION

    def _prepare(self, con: sqlite3.Connection) -> None:
        """Inside the write transaction: create the tables of a new store, or migrate a version-1/2 one."""
        if self._version is None:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables:  # created since this store was opened (another writer): check it like any existing file
                self._version = self._check(con)
            else:
                for sql in (*_CREATE, *_V3_TABLES):
                    con.execute(sql)
                con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                return
        if self._version == 1:
            have = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
            for name, kind in _V2_COLUMNS:
                if name not in have:
                    con.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
        if self._version in (1, 2):
            for sql in _V3_TABLES:
                con.execute(sql)
            con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    @staticmethod
    def _row(record: RunRecord) -> tuple[Any, ...]:
        """The ``runs`` row of ``record`` (strict JSON everywhere), in :data:`_ROW_COLUMNS` order."""
        sc = record.scenario
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return (
            record.key, record.status, record.error, str(sc.get("dataset", "")), str(sc.get("forget", "")),
            record.model, record.method, int(record.seed), _strict_json(sc), _strict_json(record.params),
            _strict_json(record.config), encode_metrics(record.metrics), record.splits_hash,
            record.created_at or now, _strict_json(record.versions),
            None if record.setting is None else int(record.setting),
            json.dumps(list(record.needs)), json.dumps(list(record.flags)),
        )  # fmt: skip


# -- the writer lock --------------------------------------------------------------------------------------------


def _lock_holder(path: Path) -> int | None:
    """The pid written into a lock file by its holder (``None`` when absent or unreadable)."""
    try:
        return int(path.read_text().strip() or "x")
    except (OSError, ValueError):
        return None


def _refusal(out_dir: Path, pid: int | None) -> StoreError:
    who = f"pid {pid}" if pid is not None else "pid unknown"
    return StoreError(f"another unlearnkit process ({who}) is writing to {out_dir}; wait for it or pick another --out")


@contextmanager
def writer_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold the advisory lock that makes this process the only unlearnkit writer of ``out_dir``.

    The lock is ``OUT/.unlearnkit.lock`` (an OS-level lock through ``filelock``: released when the block
    exits, on an exception too, and by the OS when the process dies, so a SIGKILLed run never blocks the
    next one); the holder writes its pid into it. ``out_dir`` must exist.

    Raises:
        StoreError: another process holds the lock (the message names its pid); refused at once.
    """
    from filelock import FileLock, Timeout

    out = Path(out_dir)
    path = out / LOCK_NAME
    holder = _lock_holder(path)  # read before trying: some filelock versions truncate the file on every attempt
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise _refusal(out, _lock_holder(path) or holder) from None
    except OSError as e:
        raise StoreError(f"cannot lock {path}: {e.strerror or e}") from None
    try:
        try:
            with open(path, "r+") as f:
                f.truncate()
                f.write(f"{os.getpid()}\n")
        except OSError:
            pass  # the pid only makes the refusal message friendlier
        yield
    finally:
        lock.release()


def check_unlocked(out_dir: str | Path) -> None:
    """Refuse (:class:`StoreError`) when another process holds ``out_dir``'s writer lock; creates nothing.

    For callers that start something expensive (a Ray cluster) before they can take the lock itself.
    """
    out = Path(out_dir)
    if (out / LOCK_NAME).is_file():
        with writer_lock(out):
            pass
