"""Sweeps: grid expansion, bad input, resume after SIGKILL, failures, and the Ray backend equal to in-process.

Ray tests share one local Ray session (``num_cpus=2``, module-scoped fixture, shut down at the end).
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from scipy import stats

from unlearnkit.errors import UnlearnkitError
from unlearnkit.experiments import ResultsStore, parse_config, plan
from unlearnkit.experiments.sweep import SweepProgress, load_sweep, parse_sweep, plan_sweep, run_sweep
from unlearnkit.reports import aggregate, render_markdown

TIMING = {"time_s", "time_ratio_vs_retrain", "peak_mem_mb"}
METRICS = ["acc_forget", "acc_retain", "acc_test", "js_divergence", "time_s"]


def tiny(**over) -> dict:
    """A sweep of a few seconds per cell: an MLP trained 2 epochs on digits, cheap metrics."""
    base = {
        "name": "tiny", "dataset": "digits", "model": "mlp", "forget": ["class:3"], "seeds": [0, 1],
        "methods": {"neggrad": {"lr": [1e-4, 1e-3], "epochs": 1}}, "train": {"epochs": 2}, "device": "cpu",
        "metrics": METRICS,
    }  # fmt: skip
    return {**base, **over}


def _keys(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [r[0] for r in con.execute("SELECT key FROM runs")]


# -- grid expansion -------------------------------------------------------------------------------------------


def test_grid_expands_to_the_union_of_the_cartesian_product():
    sw = parse_sweep(tiny(
        model=["mlp", "small_cnn"], forget=["class:3", "random:0.1"], seeds=[0, 1],
        methods={"neggrad": {"lr": [1e-4, 1e-3], "epochs": [1, 2]}, "finetune": {"epochs": 1}},
    ))  # fmt: skip
    sp = plan_sweep(sw)
    keys = [c.key for c in sp.cells]
    assert len(keys) == len(set(keys))
    # per (model, forget, seed): original + retrain + 4 neggrad variants + 1 finetune
    assert len(sp.cells) == 2 * 2 * 2 * (2 + 4 + 1)
    # reference: plan every combination of the full product (both methods in each config) and merge
    want: set[str] = set()
    for model, lr, ep in itertools.product(["mlp", "small_cnn"], [1e-4, 1e-3], [1, 2]):
        cfg = parse_config({**tiny(forget=["class:3", "random:0.1"]), "model": model,
                            "methods": {"neggrad": {"lr": lr, "epochs": ep}, "finetune": {"epochs": 1}}})  # fmt: skip
        want |= {c.key for c in plan(cfg)[0]}
    assert set(keys) == want
    neggrad = [c for c in sp.cells if c.method == "neggrad"]
    variants = {(c.model, c.forget, c.seed, c.params["lr"], c.params["epochs"]) for c in neggrad}
    assert len(variants) == 2 * 2 * 2 * 2 * 2


def test_same_method_twice_with_fixed_values_and_yaml(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        textwrap.dedent("""
        model: mlp
        forget: class:3
        seeds: [0]
        methods:
          - {name: neggrad, params: {lr: 1.0e-4}}
          - {name: neggrad, params: {lr: 1.0e-2, max_grad_norm: [0.5, 2.0]}}
        artifacts: art
        ray: {num_cpus: 2, num_gpus: 0.5}
    """)
    )
    sw = load_sweep(path)
    assert sw.ray.task_resources(reference=False) == {"num_cpus": 2.0, "num_gpus": 0.5}
    assert Path(sw.artifacts).is_absolute()
    cells = plan_sweep(sw).cells
    assert sorted((c.params["lr"], c.params["max_grad_norm"]) for c in cells if c.method == "neggrad") == [
        (1e-4, 1.0), (1e-2, 0.5), (1e-2, 2.0)
    ]  # fmt: skip
    assert [c.method for c in cells].count("retrain") == 1
    assert parse_sweep(tiny(seeds={"range": [2, 6]})).seeds == [2, 3, 4, 5]
    assert parse_sweep(tiny(seeds={"range": 3})).seeds == [0, 1, 2]


# -- bad input: one line, nothing written ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"methods": {"neggrad": {"lrr": [1e-3]}}}, r"methods\.neggrad\.lrr: .*'lrr' \(did you mean 'lr'"),
        ({"methods": {"neggrad": {"lr": []}}}, r"methods\.neggrad\.lr: empty grid"),
        ({"seeds": []}, r"seeds: empty grid"),
        ({"seeds": {"range": [3, 3]}}, r"seeds: empty grid"),
        ({"seeds": {"range": "x"}}, r"seeds: expected a list of seeds or \{range"),
        ({"model": []}, r"model: empty grid"),
        ({"forget": []}, r"forget: empty grid"),
        ({"methods": []}, r"methods: empty grid"),
        ({"methods": {"negrad": {"lr": [1e-3]}}}, r"unknown method 'negrad'.*did you mean"),
        ({"methods": {"neggrad": {"lr": [1e-3, -1.0]}}}, r"lr"),
        ({"ray": {"num_gpus": -1}}, r"ray: num_gpus"),
        ({"bogus": 1}, r"bogus: unknown key"),
    ],
)
def test_bad_grid_is_one_line_error(over, match):
    def parse_and_plan() -> None:  # hyperparameter values are checked when planning (before any work)
        plan_sweep(parse_sweep(tiny(**over)))

    with pytest.raises(UnlearnkitError, match=match) as e:
        parse_and_plan()
    assert "\n" not in str(e.value)


def test_unwritable_artifacts_writes_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sw = parse_sweep(tiny(artifacts=str(blocker / "art")))
    with pytest.raises(UnlearnkitError, match=r"artifacts directory .* is not writable"):
        run_sweep(sw, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_unreachable_ray_address_fails_fast_and_writes_nothing(tmp_path):
    pytest.importorskip("ray")
    sw = parse_sweep(tiny(artifacts=str(tmp_path / "art"), ray={"connect_timeout_s": 5}))
    t0 = time.perf_counter()
    with pytest.raises(UnlearnkitError, match=r"cannot reach a Ray cluster at 127\.0\.0\.1:1") as e:
        run_sweep(sw, tmp_path / "out", ray_address="127.0.0.1:1")
    assert time.perf_counter() - t0 < 30 and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UnlearnkitError, match="needs 'artifacts:'"):
        run_sweep(parse_sweep(tiny()), tmp_path / "out", ray_address="127.0.0.1:1")


def test_ray_address_forms(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from unlearnkit.experiments.ray_backend import _host_port

    assert _host_port("10.0.0.5:6380") == ("10.0.0.5", 6380)
    assert _host_port("head") == ("head", 6379)
    assert _host_port("ray://head") == ("head", 10001)
    monkeypatch.setenv("RAY_ADDRESS", "")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with pytest.raises(UnlearnkitError, match="no running Ray cluster found"):
        _host_port("auto")
    with pytest.raises(UnlearnkitError, match="invalid port"):
        _host_port("head:port")


def test_cli_sweep_exit_code_2():
    from typer.testing import CliRunner

    from unlearnkit import cli

    names = {c.name or getattr(c.callback, "__name__", "") for c in cli.app.registered_commands}
    if "sweep" not in names:
        pytest.skip("the `unlearnkit sweep` command is not wired yet")
    res = CliRunner().invoke(cli.app, ["sweep", "does-not-exist.yaml"])
    assert res.exit_code == 2 and "not found" in res.output


# -- resume after SIGKILL of the driver (in-process backend; the Ray variant is slow) ----------------------------

DRIVER = """
import json, sys
from unlearnkit.experiments.sweep import parse_sweep, run_sweep
run_sweep(parse_sweep(json.loads(sys.argv[1])), sys.argv[2], backend=sys.argv[3], ray_init={"num_cpus": 2})
"""


def _kill_after_first_rows(tmp_path: Path, cfg: dict, backend: str, sig: int = signal.SIGKILL) -> int:
    """Start the sweep in a subprocess, send ``sig`` once a row is stored; return the row count after it ended."""
    db = tmp_path / "out" / "results.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(cfg), str(tmp_path / "out"), backend],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if db.is_file() and _keys(db):
                    break
            except sqlite3.OperationalError:  # the driver is creating the schema
                pass
            time.sleep(0.05)
        assert proc.poll() is None, f"the driver ended before it could be killed: {proc.stderr.read()[-2000:]}"
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=120) != 0  # SIGINT: KeyboardInterrupt ends the driver (Ray tasks cancelled)
    finally:
        try:  # processes the driver started (e.g. Ray's node agents) outlive its SIGKILL: end its own session
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(_keys(db))


def _check_resume(tmp_path: Path, cfg: dict, before: int, backend: str = "inprocess", **kw) -> None:
    sw = parse_sweep(cfg)
    planned = [c.key for c in plan_sweep(sw).cells]
    assert 1 <= before < len(planned), "the kill did not land mid-sweep"
    res = run_sweep(sw, tmp_path / "out", backend=backend, **kw)
    assert (res.ran, res.skipped) == (len(planned) - before, before)
    keys = _keys(tmp_path / "out" / "results.db")
    assert len(keys) == len(set(keys)) == len(planned) and set(keys) == set(planned)
    with sqlite3.connect(tmp_path / "out" / "results.db") as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert all(r["status"] == "ok" for r in ResultsStore(tmp_path / "out" / "results.db").runs())


def test_sigkill_mid_sweep_resumes_to_the_full_set(tmp_path):
    cfg = tiny(seeds=[0, 1, 2], artifacts=str(tmp_path / "art"), metrics=["acc_forget", "acc_test"])
    before = _kill_after_first_rows(tmp_path, cfg, "inprocess")
    _check_resume(tmp_path, cfg, before)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_ray_driver_resumes_to_the_full_set(tmp_path, sig):
    pytest.importorskip("ray")
    cfg = tiny(seeds=[0, 1, 2], artifacts=str(tmp_path / "art"), metrics=["acc_forget", "acc_test"])
    before = _kill_after_first_rows(tmp_path, cfg, "ray", sig)
    _check_resume(tmp_path, cfg, before, backend="ray", ray_init={"num_cpus": 2})


# -- the Ray backend ----------------------------------------------------------------------------------------------

FAILING = {"name": "neggrad", "params": {"lr": 1e30, "max_grad_norm": 1e30, "epochs": 1}}  # diverges to NaN


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def _metrics_without_timing(rec: dict) -> dict:
    return {k: v for k, v in rec["metrics"].items() if k not in TIMING}


def test_ray_equals_inprocess_records_failures_and_resumes(local_ray, tmp_path):
    methods = [{"name": "neggrad", "params": {"lr": [1e-4, 1e-3], "epochs": 1}}, FAILING]
    runs = {}
    for backend in ("inprocess", "ray"):
        sw = parse_sweep(tiny(methods=methods, artifacts=str(tmp_path / backend / "art"), ray={"num_cpus": 1}))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the Ray tasks reserve 1 CPU and use 1 thread; float sums depend on it
        try:
            res = run_sweep(sw, tmp_path / backend / "out", backend=backend)
        finally:
            torch.set_num_threads(threads)
        assert (res.ran, res.failed, res.trained_models) == (10, 2, 4)  # 2 seeds x (orig, retrain, 3 neggrad)
        runs[backend] = {r["key"]: r for r in ResultsStore(tmp_path / backend / "out" / "results.db").runs()}
    local, remote = runs["inprocess"], runs["ray"]
    assert local.keys() == remote.keys()
    for key, rec in local.items():
        assert remote[key]["status"] == rec["status"]
        assert remote[key]["splits_hash"] == rec["splits_hash"]
        assert _metrics_without_timing(remote[key]) == _metrics_without_timing(rec), rec["method"]
    failed = [r for r in remote.values() if r["status"] == "failed"]
    assert {r["params"]["lr"] for r in failed} == {1e30} and all("nan" in r["error"] for r in failed)
    assert all(r["metrics"]["acc_test"] > 0.1 for r in remote.values() if r["status"] == "ok")
    # resume on Ray: nothing to do; --retry-failed reruns only the failed cells
    sw = parse_sweep(tiny(methods=methods, artifacts=str(tmp_path / "ray" / "art"), ray={"num_cpus": 1}))
    again = run_sweep(sw, tmp_path / "ray" / "out", backend="ray")
    assert (again.ran, again.skipped, again.trained_models) == (0, 10, 0)
    retry = run_sweep(sw, tmp_path / "ray" / "out", backend="ray", retry_failed=True)
    assert (retry.ran, retry.failed, retry.skipped) == (2, 2, 8)
    assert len(_keys(tmp_path / "ray" / "out" / "results.db")) == 10
    assert "Mean ± 95% CI over seeds" in (tmp_path / "ray" / "out" / "report.md").read_text()


@pytest.mark.slow
def test_ray_trains_lira_shadows_as_reference_tasks(local_ray, tmp_path):
    over = {"seeds": [0], "methods": {"neggrad": {"lr": 1e-3, "epochs": 1}}, "lira_shadows": 4,
            "metrics": ["acc_forget", "lira_auc", "ulira_auc"], "ray": {"num_cpus": 1}}  # fmt: skip
    runs = {}
    for backend in ("inprocess", "ray"):
        sw = parse_sweep(tiny(**over, artifacts=str(tmp_path / backend / "art")))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert run_sweep(sw, tmp_path / backend / "out", backend=backend).failed == 0
        finally:
            torch.set_num_threads(threads)
        runs[backend] = {r["key"]: r["metrics"] for r in ResultsStore(tmp_path / backend / "out" / "results.db").runs()}
        sidecars = [json.loads(p.read_text()) for p in (tmp_path / backend / "art" / "models").glob("*.json")]
        assert sum(c["key"].get("role") == "lira_shadow" for c in sidecars) == 4
    assert runs["ray"] == runs["inprocess"]
    assert all(isinstance(m["lira_auc"], float) for m in runs["ray"].values())


# -- progress and seed statistics -----------------------------------------------------------------------------


def test_sweep_progress_shows_running_failed_and_references():
    buf = io.StringIO()
    p = SweepProgress(Console(file=buf, width=120, force_terminal=False))
    p.start(3)
    p.references(2, 4)
    p.running(2)
    p.run_finished("digits class:3 s0 neggrad", "failed")
    p.run_finished("digits class:3 s0 retrain", "ok")
    p.close()
    out = buf.getvalue()
    assert "failed digits class:3 s0 neggrad" in out
    assert "cells" in out and "2/3" in out and "running 2" in out and "failed 1" in out
    assert "reference models" in out and "2/4" in out


def _run(method: str, seed: int, value: float | None, status: str = "ok") -> dict:
    return {"method": method, "seed": seed, "scenario": {"dataset": "digits", "forget": "class:3", "seed": seed},
            "status": status, "error": None if status == "ok" else "boom",
            "metrics": {} if value is None else {"acc_retain": value}}  # fmt: skip


def test_ci95_matches_scipy_t_interval():
    vals = [0.91, 0.87, 0.95, 0.90]
    runs = [_run("retrain", s, v) for s, v in enumerate(vals)]
    stat = aggregate(runs)[0].rows[0].stats["acc_retain"]
    lo, hi = stats.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=stats.sem(vals))
    assert stat.ci95 == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert stat.to_json()["ci95"] == pytest.approx((hi - lo) / 2)
    assert aggregate(runs[:1])[0].rows[0].stats["acc_retain"].ci95 is None  # one seed: no interval
    assert math.isnan(aggregate([_run("r", 0, 0.5), _run("r", 1, math.nan)])[0].rows[0].stats["acc_retain"].ci95)


def test_report_marks_rows_with_fewer_seeds_than_asked():
    runs = [_run("retrain", s, 0.9 + 0.01 * s) for s in (0, 1, 2)]
    runs += [_run("neggrad", 0, 0.8), _run("neggrad", 1, None, "failed")]  # seed 2 never ran
    md = render_markdown(runs)
    lo, hi = stats.t.interval(0.95, 2, loc=0.91, scale=stats.sem([0.9, 0.91, 0.92]))
    assert f"| retrain | 3/3 | 0.910 ± {(hi - lo) / 2:.3f} |" in md
    assert "| neggrad | 1 of 3 (+1 failed) |" in md  # main table: one seed failed, one never ran
    assert "| neggrad | 1/3 [1] | 0.800 [2] |" in md
    assert "[1] neggrad: 1 of 3 seeds asked (failed: 1; not run: 2)" in md
    assert "[2] fewer seeds than asked: 1 of 3" in md
    assert "Mean ± 95% CI" not in render_markdown(runs[:1])  # one seed everywhere: no CI table


# -- setting 3 (CLIP concept unlearning) on the same sweep path ------------------------------------------------


def tiny_concept(**over) -> dict:
    """A setting-3 grid of seconds per cell: a tiny CLIP pretrained 1 epoch on a tiny concept world."""
    base = {
        "name": "tiny_concept", "setting": 3, "world": {"n_train": 32, "n_val": 8, "n_test": 16},
        "clip": {"config": "clip_tiny"}, "pretrain": {"epochs": 1, "batch_size": 16}, "seeds": [0, 1],
        "methods": {"safe_clip": {"lambda_unsafe_negatives": [0.25, 0.5], "epochs": 1, "batch_size": 16}},
        "device": "cpu", "metrics": ["t2v_r1", "tstar_to_v_union_r1", "unsafe_rate_tstar"],
    }  # fmt: skip
    return {**base, **over}


def test_setting3_grid_plans_cells_like_any_other():
    pytest.importorskip("transformers")
    sp = plan_sweep(parse_sweep(tiny_concept()))
    assert sorted((c.seed, c.method, c.params.get("lambda_unsafe_negatives")) for c in sp.cells) == [
        (s, m, lam) for s in (0, 1) for m, lam in (("original", None), ("safe_clip", 0.25), ("safe_clip", 0.5))
    ]
    assert all(c.setting == 3 and c.forget == "concept:unsafe" and c.model == "clip_tiny" for c in sp.cells)
    assert len({c.key for c in sp.cells}) == 6
    (bigger,) = [c for c in plan_sweep(parse_sweep(tiny_concept(world={"n_train": 48}))).cells
                 if c.seed == 0 and c.method == "original"]  # fmt: skip
    assert bigger.key not in {c.key for c in sp.cells}  # the CLIP sections are part of a cell's identity
    saving = plan_sweep(parse_sweep(tiny_concept(save_models=True))).cells
    assert {c.key for c in saving} == {c.key for c in sp.cells}  # where exports go is not
    classifier = plan_sweep(parse_sweep(tiny())).cells  # classifier keys stay what they were before CLIP cells
    assert all(c.setting == 1 and not {"setting", "concept"} & set(c.identity()) for c in classifier)
    with pytest.raises(UnlearnkitError, match="method 'neggrad' unlearns a classifier model"):
        plan_sweep(parse_sweep(tiny_concept(methods={"neggrad": {}})))
    with pytest.raises(UnlearnkitError, match=r"methods\.safe_clip\.lr_x: method 'safe_clip' has no hyperparameter"):
        parse_sweep(tiny_concept(methods={"safe_clip": {"lr_x": [1, 2]}}))


def test_setting3_sweep_in_process_stores_resumes_and_retries_failed(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from unlearnkit.concept.safe_clip import SafeCLIP

    sw = parse_sweep(tiny_concept(artifacts=str(tmp_path / "art")))
    real = SafeCLIP._unlearn

    def boom(self, model, data, generator):
        raise RuntimeError("diverged")

    monkeypatch.setattr(SafeCLIP, "_unlearn", boom)
    res = run_sweep(sw, tmp_path / "out")
    assert (res.ran, res.failed, res.trained_models) == (6, 4, 2)  # one original CLIP pretrained per seed
    failed = ResultsStore(tmp_path / "out" / "results.db").runs(status="failed")
    assert {r["method"] for r in failed} == {"safe_clip"}
    assert all("RuntimeError: diverged" in r["error"] for r in failed)
    again = run_sweep(sw, tmp_path / "out")
    assert (again.ran, again.skipped) == (0, 6)
    monkeypatch.setattr(SafeCLIP, "_unlearn", real)
    retry = run_sweep(sw, tmp_path / "out", retry_failed=True)
    assert (retry.ran, retry.failed, retry.skipped, retry.trained_models) == (4, 0, 2, 0)  # originals cached
    runs = ResultsStore(tmp_path / "out" / "results.db").runs()
    assert len(runs) == 6 and all(r["status"] == "ok" for r in runs)
    lams = sorted(r["params"]["lambda_unsafe_negatives"] for r in runs if r["method"] == "safe_clip")
    assert lams == [0.25, 0.25, 0.5, 0.5]
    assert "Talk layout: concept redirection in CLIP (setting 3)" in (tmp_path / "out" / "report.md").read_text()


def test_setting3_sigkill_mid_sweep_resumes_to_the_full_set(tmp_path):
    pytest.importorskip("transformers")
    cfg = tiny_concept(artifacts=str(tmp_path / "art"))
    before = _kill_after_first_rows(tmp_path, cfg, "inprocess")
    _check_resume(tmp_path, cfg, before)


def test_setting3_sweep_on_ray_equals_in_process(local_ray, tmp_path):
    pytest.importorskip("transformers")
    runs = {}
    for backend in ("inprocess", "ray"):
        cfg = tiny_concept(seeds=[0], artifacts=str(tmp_path / backend / "art"), ray={"num_cpus": 1})
        res = run_sweep(parse_sweep(cfg), tmp_path / backend / "out", backend=backend)
        assert (res.ran, res.failed, res.trained_models) == (3, 0, 1), backend  # the original CLIP trained once
        runs[backend] = {r["key"]: r for r in ResultsStore(tmp_path / backend / "out" / "results.db").runs()}
    assert set(runs["ray"]) == set(runs["inprocess"])
    for key, rec in runs["ray"].items():
        assert _metrics_without_timing(rec) == _metrics_without_timing(runs["inprocess"][key]), rec["method"]
        assert rec["scenario"] == runs["inprocess"][key]["scenario"]


@pytest.mark.slow
def test_setting3_killed_ray_driver_resumes_to_the_full_set(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("transformers")
    cfg = tiny_concept(artifacts=str(tmp_path / "art"))
    before = _kill_after_first_rows(tmp_path, cfg, "ray")
    _check_resume(tmp_path, cfg, before, backend="ray", ray_init={"num_cpus": 2})
