"""The results store under faults (issue 13, cases 4, 7, 8 and strict JSON) and its typed records (issue 12).

Every problem with a store is one line and exit 2 at the CLI; a file that is not an unlearnkit store is
never changed; ``report`` opens read-only; a failed command leaves no empty ``results.db``; a second writer
on the same ``--out`` is refused before any work.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.errors import StoreError, UnlearnkitError
from unlearnkit.experiments import ResultsStore
from unlearnkit.experiments import runner as runner_mod
from unlearnkit.experiments.record import RunRecord
from unlearnkit.experiments.store import LOCK_NAME, SCHEMA_VERSION, infer_setting, writer_lock
from unlearnkit.metrics import NotComputed

cli = CliRunner()
FAST = ["--epochs", "1", "--methods", "finetune", "--device", "cpu", "--quiet", "--forget", "class:3"]


def _invoke(args: list[str]):
    return cli.invoke(app, args, catch_exceptions=False)


def _record(i: int = 0, **kw) -> RunRecord:
    base = dict(
        key=f"k{i:04d}", scenario={"dataset": "digits", "forget": "class:3", "seed": 0}, model="mlp",
        method="finetune", seed=0, params={"lr": 0.01}, config={"epochs": 1},
        metrics={"acc_test": 0.5 + i / 10_000, "note": "x" * 300}, setting=1, needs=("forget", "retain"),
        splits_hash="h0", splits={"forget": [1, 2, 3]}, versions={"unlearnkit": "0"},
    )  # fmt: skip
    return RunRecord(**{**base, **kw})


def _store(path: Path, n: int = 3) -> Path:
    s = ResultsStore(path)
    for i in range(n):
        s.put(_record(i))
    return path


def _fingerprint(path: Path) -> tuple[str, int, list[str]]:
    """Bytes, mtime and the files beside it: what must not change."""
    return (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns, sorted(os.listdir(path.parent)))


def _one_line_exit_2(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def _report_cli(directory: Path) -> str:
    return " ".join(_one_line_exit_2(_invoke(["report", str(directory)])).split())


# -- typed records, strict JSON ---------------------------------------------------------------------------------


def test_put_and_read_back_typed_records_with_strict_json(tmp_path):
    db = tmp_path / "results.db"
    store = ResultsStore(db)
    rec = _record(
        metrics={"acc": 0.25, "nan": float("nan"), "inf": float("inf"), "nc": NotComputed("no retain data"),
                 "curve": {"x": [0.0, 1.0]}, "legacy": "not computed: old reason"},
        params={"lr": float("inf"), "betas": (0.9, 0.99)}, config={"threads": 1, "bound": float("-inf")},
        setting=2, needs=("forget",), flags=("collapsed: retain accuracy 0.11 (chance 0.10)",),
    )  # fmt: skip
    store.put(rec)
    (got,) = store.records()
    assert isinstance(got, RunRecord)
    assert got.metrics["acc"] == 0.25 and got.metrics["curve"] == {"x": [0.0, 1.0]}
    assert got.metrics["nc"] == NotComputed("no retain data")
    assert got.metrics["legacy"] == NotComputed("old reason")
    for k in ("nan", "inf"):
        assert isinstance(got.metrics[k], NotComputed) and "non-finite" in got.metrics[k].reason
    assert got.params == {"lr": "inf", "betas": [0.9, 0.99]} and got.config["bound"] == "-inf"
    assert (got.setting, got.needs, got.flags) == (2, ("forget",), rec.flags)
    assert got.created_at and store.splits("h0") == {"forget": [1, 2, 3]}
    assert store.runs() == [got.as_dict()]
    assert store.runs()[0]["metrics"]["nc"] == "not computed: no retain data"
    with sqlite3.connect(db) as con:  # every JSON column is valid for SQLite's strict parser
        cols = (
            "scenario_json",
            "params_json",
            "config_json",
            "metrics_json",
            "versions_json",
            "needs_json",
            "flags_json",
        )
        assert all(con.execute(f"SELECT {', '.join(f'json_valid({c})' for c in cols)} FROM runs").fetchone())
        assert con.execute("SELECT json_extract(metrics_json, '$.acc') FROM runs").fetchone() == (0.25,)
        raw = con.execute("SELECT metrics_json, params_json FROM runs").fetchone()
    for text in raw:
        json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert store.status("k0000") == "ok" and store.status("nope") is None and len(store) == 1


def test_readonly_store_refuses_put_and_unknown_status(tmp_path):
    db = _store(tmp_path / "results.db", 1)
    with pytest.raises(StoreError, match="read-only"):
        ResultsStore(db, readonly=True).put(_record(9))
    with pytest.raises(StoreError, match="status must be"):
        ResultsStore(db).records(status="done")
    with pytest.raises(StoreError, match="no results store at"):
        ResultsStore(tmp_path / "missing.db", readonly=True)


# -- schema version 1 -> 2 --------------------------------------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    key TEXT PRIMARY KEY, status TEXT NOT NULL CHECK (status IN ('ok', 'failed')), error TEXT,
    dataset TEXT NOT NULL, forget TEXT NOT NULL, model TEXT NOT NULL, method TEXT NOT NULL, seed INTEGER NOT NULL,
    scenario_json TEXT NOT NULL, params_json TEXT NOT NULL, config_json TEXT NOT NULL, metrics_json TEXT NOT NULL,
    splits_hash TEXT, created_at TEXT NOT NULL, versions_json TEXT NOT NULL
);
CREATE TABLE splits (hash TEXT PRIMARY KEY, splits_json TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def _v1_store(path: Path) -> Path:
    """A store as unlearnkit wrote it before schema version 2 (metrics with a NaN token and a legacy string)."""
    rows = [  # key, forget, method, params, config, metrics
        ("a", "class:3", "finetune", {"lr": 0.1}, {}, '{"acc_test": 0.9, "mia": "not computed: no test split"}'),
        ("b", "class:3", "lora_no_retain", {"shots": 10}, {}, '{"acc_test": NaN}'),
        ("c", "concept:nudity", "safe_clip", {}, {}, '{"recall@1": 0.5}'),
        ("d", "class:3", "x", {}, {"setting": 2}, "{}"),
    ]
    with sqlite3.connect(path) as con:
        con.executescript(V1_SCHEMA)
        for key, forget, method, params, config, metrics in rows:
            sc = json.dumps({"dataset": "digits", "forget": forget, "seed": 0})
            con.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, "ok", None, "digits", forget, "mlp", method, 0, sc, json.dumps(params), json.dumps(config),
                 metrics, None, f"2025-01-01T00:00:0{len(key)}", "{}"),
            )  # fmt: skip
    con.close()
    return path


def test_v1_store_reads_as_is_read_only_and_infers_setting(tmp_path):
    db = _v1_store(tmp_path / "results.db")
    before = _fingerprint(db)
    recs = {r.key: r for r in ResultsStore(db, readonly=True).records()}
    assert {k: r.setting for k, r in recs.items()} == {"a": 1, "b": 2, "c": 3, "d": 2}
    assert all(r.needs == () and r.flags == () for r in recs.values())
    assert recs["a"].metrics["mia"] == NotComputed("no test split")
    assert isinstance(recs["b"].metrics["acc_test"], NotComputed)  # a NaN token from an old writer
    assert _fingerprint(db) == before
    assert infer_setting({"forget": "class:1"}, {}, {"setting": True}) == 1  # a bool is not a setting


def test_v1_store_is_migrated_by_its_first_write_in_one_transaction(tmp_path):
    db = _v1_store(tmp_path / "results.db")
    store = ResultsStore(db)
    assert store.status("a") == "ok"  # readable (and unchanged) before any write
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT value FROM meta").fetchone() == ("1",)
    with pytest.raises(StoreError):  # violates the status CHECK: the whole transaction, migration included, rolls back
        store.put(_record(1, status="maybe"))
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT value FROM meta").fetchone() == ("1",)
        assert "setting" not in {r[1] for r in con.execute("PRAGMA table_info(runs)")}
    store.put(_record(1, setting=2, needs=("forget",)))
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
        assert {"setting", "needs_json", "flags_json"} <= {r[1] for r in con.execute("PRAGMA table_info(runs)")}
    recs = {r.key: r for r in ResultsStore(db, readonly=True).records()}
    assert len(recs) == 5 and recs["c"].setting == 3 and recs["k0001"].needs == ("forget",)


# -- case 4: store errors are one line, exit 2; foreign files are never changed ---------------------------------


def test_schema_version_1_5_beta_is_one_line(tmp_path):
    db = _store(tmp_path / "results.db")
    with sqlite3.connect(db) as con:
        con.execute("UPDATE meta SET value='1.5-beta' WHERE key='schema_version'")
    con.close()
    assert "schema version 1.5-beta" in _report_cli(tmp_path)
    for readonly in (False, True):
        with pytest.raises(StoreError, match=r"schema version 1\.5-beta; this unlearnkit reads versions 1, 2"):
            ResultsStore(db, readonly=readonly)


def test_truncated_json_value_in_a_row_is_one_line(tmp_path):
    db = _store(tmp_path / "results.db")
    with sqlite3.connect(db) as con:
        con.execute("UPDATE runs SET params_json = substr(params_json, 1, 5) WHERE key='k0001'")
    con.close()
    assert "run k0001: params_json is not valid JSON" in _report_cli(tmp_path)
    with pytest.raises(StoreError, match=r"run k0001: params_json is not valid JSON"):
        ResultsStore(db, readonly=True).runs()
    with sqlite3.connect(db) as con:
        con.execute("UPDATE runs SET params_json='{}', metrics_json = '{\"acc\": 0.' WHERE key='k0001'")
    con.close()
    assert "run k0001: metrics_json is not valid JSON" in _report_cli(tmp_path)


def _damage_mid_file(db: Path) -> None:
    size = db.stat().st_size
    assert size > 20 * 4096, "the store is too small to damage mid-file"
    with open(db, "r+b") as f:  # a whole page in the middle becomes garbage (page type, cell pointers, ...)
        f.seek((size // 4096 // 2) * 4096)
        f.write(b"\xa5" * 4096)


def test_damaged_page_mid_file_is_one_line_and_caught_before_any_work(tmp_path, monkeypatch):
    db = _store(tmp_path / "out" / "results.db", 200)
    _damage_mid_file(db)
    assert "malformed" in _report_cli(tmp_path / "out")
    with pytest.raises(StoreError, match=r"malformed|damaged"):
        ResultsStore(db)  # opened for writing: quick_check refuses before any run
    with pytest.raises(StoreError, match="malformed"):
        ResultsStore(db, readonly=True).runs()

    def no_training(*a, **k):
        raise AssertionError("a cell ran although the store is damaged")

    monkeypatch.setattr(runner_mod, "run_cell", no_training)
    line = _one_line_exit_2(_invoke(["run", *FAST, "--out", str(tmp_path / "out")]))
    assert "results.db" in line


def _copy_mid_transaction(db: Path, dest: Path, with_journal: bool) -> None:
    """Copy ``db`` while a large write transaction has spilled pages into it (and, maybe, its hot journal)."""
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA cache_size=5")  # spill changed pages into the file before the commit
    con.execute("BEGIN")
    con.execute("UPDATE runs SET metrics_json = json_object('acc_test', 0.1, 'pad', printf('%.2000c', 'y'))")
    con.execute("DELETE FROM runs WHERE key > 'k0100'")
    assert Path(f"{db}-journal").exists()
    shutil.copy(db, dest)
    if with_journal:
        shutil.copy(f"{db}-journal", f"{dest}-journal")
    con.execute("ROLLBACK")
    con.close()


def test_database_copied_without_its_journal_is_one_line(tmp_path):
    db = _store(tmp_path / "src" / "results.db", 200)
    (tmp_path / "copy").mkdir()
    copy = tmp_path / "copy" / "results.db"
    _copy_mid_transaction(db, copy, with_journal=False)
    assert "damaged" in _report_cli(tmp_path / "copy")
    with pytest.raises(StoreError, match=r"is damaged .*without its -journal"):
        ResultsStore(copy, readonly=True).runs()


def test_copy_with_a_hot_journal_report_is_one_line_and_a_write_open_recovers(tmp_path):
    db = _store(tmp_path / "src" / "results.db", 200)
    (tmp_path / "copy").mkdir()
    copy = tmp_path / "copy" / "results.db"
    _copy_mid_transaction(db, copy, with_journal=True)
    before = _fingerprint(copy)
    assert "unfinished transaction" in _report_cli(tmp_path / "copy")  # read-only: cannot roll it back
    assert _fingerprint(copy) == before
    assert len(ResultsStore(copy).records()) == 200  # a write open lets SQLite roll the journal back


FOREIGN = {
    "someone else's database": "CREATE TABLE users (id INTEGER, name TEXT); INSERT INTO users VALUES (1, 'a');",
    "runs but no meta table": "CREATE TABLE runs (key TEXT PRIMARY KEY); INSERT INTO runs VALUES ('x');",
    "meta without a version": "CREATE TABLE meta (key TEXT, value TEXT); CREATE TABLE runs (key TEXT);",
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_foreign_sqlite_file_is_refused_and_left_unchanged(tmp_path, case):
    db = tmp_path / "results.db"
    with sqlite3.connect(db) as con:
        con.executescript(FOREIGN[case])
    con.close()
    before = _fingerprint(db)
    time.sleep(0.01)  # an mtime change would be visible
    assert "not an unlearnkit results store" in _report_cli(tmp_path)
    assert _fingerprint(db) == before
    for readonly in (False, True):
        with pytest.raises(StoreError, match=r"is not an unlearnkit results store .*left unchanged"):
            ResultsStore(db, readonly=readonly)
    assert _fingerprint(db) == before


def test_report_opens_read_only_and_never_changes_the_store(tmp_path, monkeypatch):
    db = _v1_store(tmp_path / "results.db")
    before = _fingerprint(db)
    opened = []
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: opened.append((a, k)) or real(*a, **k))
    res = _invoke(["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert opened and all(k.get("uri") and str(a[0]).endswith("?mode=ro") for a, k in opened)
    after = _fingerprint(db)
    assert after[:2] == before[:2] and set(after[2]) - set(before[2]) == {"report.json", "report.md", "report.html"}


# -- case 8: no empty results.db after a failure ------------------------------------------------------------------


def test_failure_after_planning_leaves_no_results_db(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise UnlearnkitError("the data could not be read (injected)")

    monkeypatch.setattr(runner_mod, "run_cell", boom)
    out = tmp_path / "out"
    line = _one_line_exit_2(_invoke(["run", *FAST, "--out", str(out)]))
    assert "injected" in line
    assert not (out / "results.db").exists()


def test_store_file_is_created_by_the_first_put_and_removed_if_that_put_fails(tmp_path):
    db = tmp_path / "results.db"
    store = ResultsStore(db)
    assert not db.exists() and store.records() == [] and store.status("k") is None and len(store) == 0
    with pytest.raises(StoreError, match="too large"):  # seed beyond SQLite's INTEGER: one line, no file left
        store.put(_record(0, seed=10**23))
    assert not db.exists()
    store.put(_record(0))
    assert db.is_file() and len(store) == 1


# -- case 7: one writer per --out ---------------------------------------------------------------------------------

HOLDER = """
import sys, time
from unlearnkit.experiments.store import writer_lock
with writer_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held_out(tmp_path):
    """An --out held by another process (yields the folder and that process)."""
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield out, proc
    finally:
        proc.kill()
        proc.wait()


def _refused(line: str, out: Path, pid: int) -> None:
    line = " ".join(line.split())
    assert f"another unlearnkit process (pid {pid}) is writing to" in line, line
    assert "wait for it or pick another --out" in line


@pytest.fixture
def no_training(monkeypatch):
    def never(*a, **k):
        raise AssertionError("a cell ran while another process holds --out")

    monkeypatch.setattr(runner_mod, "run_cell", never)
    monkeypatch.setattr(runner_mod, "audit_cells", lambda *a, **k: [])


def test_second_run_sweep_audit_into_a_held_out_are_refused(tmp_path, held_out, no_training):
    out, proc = held_out
    _refused(_one_line_exit_2(_invoke(["run", *FAST, "--out", str(out)])), out, proc.pid)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("dataset: digits\nmodel: mlp\nforget: ['class:3']\nmethods: [finetune]\ntrain: {epochs: 1}\n"
                     "device: cpu\n")  # fmt: skip
    _refused(_one_line_exit_2(_invoke(["sweep", str(sweep), "--out", str(out), "--quiet"])), out, proc.pid)
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"unused: audit_cells is patched")
    res = _invoke(["audit", "--model", str(ckpt), "--config", str(sweep), "--out", str(out), "--quiet"])
    _refused(_one_line_exit_2(res), out, proc.pid)
    assert sorted(os.listdir(out)) == [LOCK_NAME]  # nothing written


def test_lock_of_a_sigkilled_process_does_not_block(held_out):
    out, proc = held_out
    with pytest.raises(StoreError, match=f"pid {proc.pid}"):
        with writer_lock(out):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with writer_lock(out):
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_lock_is_released_on_exceptions(tmp_path):
    with pytest.raises(RuntimeError), writer_lock(tmp_path):
        raise RuntimeError("inside")
    with writer_lock(tmp_path):  # free again
        pass
    with writer_lock(tmp_path), pytest.raises(StoreError, match=f"pid {os.getpid()}"), writer_lock(tmp_path):
        pass  # a second holder in the same process is refused too


def test_nan_metric_row_is_readable_by_sqlite_json_functions(tmp_path):
    db = tmp_path / "results.db"
    ResultsStore(db).put(_record(0, metrics={"acc_forget": math.nan, "acc_test": 0.5}))
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT json_extract(metrics_json, '$.acc_test') FROM runs").fetchone() == (0.5,)
        reason = con.execute("SELECT json_extract(metrics_json, '$.acc_forget.not_computed') FROM runs").fetchone()
    assert "non-finite" in reason[0]
