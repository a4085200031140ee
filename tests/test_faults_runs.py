"""Issue 13, cases 1 and 3: no number from a non-finite model, collapsed models flagged, exit codes, retries.

- A method or checkpoint whose weights/outputs are NaN/inf is a failed run with the reason, never scored; the
  stored metrics are strict JSON (SQLite's json_extract works on every row); the console summary does not crash.
- A model near chance accuracy is scored but flagged (stored with the run, listed in report.md).
- An unwritable model cache is refused before any work (one line, exit 2, nothing written); exit status is
  0 when every run is ok and 1 when any failed; ``run --retry-failed`` reruns the failed runs.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import torch
import yaml
from typer.testing import CliRunner

import unlearnkit as uk
from unlearnkit.cli import app
from unlearnkit.engine.checks import collapse_flag, nonfinite_reason, nonfinite_weights
from unlearnkit.experiments import ResultsStore

runner = CliRunner()
#: a tiny benchmark: mlp on digits, 2 epochs
TINY = ["--model", "mlp", "--epochs", "2", "--device", "cpu", "--quiet", "--forget", "class:3"]


def _invoke(args: list[str], env: dict[str, str] | None = None):
    return runner.invoke(app, args, catch_exceptions=False, env=env)


def _json_extract_ok(db: Path) -> None:
    """Every stored metrics_json is strict JSON: SQLite's json_extract reads it on every row."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT key, json_extract(metrics_json, '$') FROM runs").fetchall()
    assert rows and all(r[1] is not None for r in rows)


def test_nonfinite_checks_and_collapse_flag() -> None:
    net = uk.create_model("mlp", 10, (1, 8, 8))
    assert nonfinite_weights(net) is None
    with torch.no_grad():
        next(net.parameters())[0, 0] = float("nan")
    assert nonfinite_weights(net) is not None
    sc = uk.Scenario(dataset="digits", forget="class:3", seed=0)
    assert "non-finite weights" in (nonfinite_reason(net, sc.split("test"), device=torch.device("cpu")) or "")
    assert collapse_flag({"acc_test": 0.12}, 10) is not None
    assert collapse_flag({"acc_test": 0.9, "acc_retain": 0.95}, 10) is None
    assert collapse_flag({"acc_test": "not computed: x"}, 10) is None


def test_diverged_method_is_failed_not_scored(tmp_path: Path) -> None:
    """fisher_forgetting with a huge alpha gives NaN weights: a failed run with the reason, exit 1, no crash."""
    out = tmp_path / "out"
    cfg = _cfg(tmp_path, {"fisher_forgetting": {"alpha": 1e30}})
    res = _invoke(["run", "--config", str(cfg), "--out", str(out), "--quiet"])
    assert res.exit_code == 1, res.output
    assert "1 runs failed" in res.output and "not usable" in res.output
    runs = {r["method"]: r for r in ResultsStore(out / "results.db").runs()}
    assert runs["fisher_forgetting"]["status"] == "failed"
    assert "non-finite" in runs["fisher_forgetting"]["error"]
    assert runs["fisher_forgetting"]["metrics"] == {}
    assert runs["retrain"]["status"] == "ok"
    _json_extract_ok(out / "results.db")
    assert "fisher_forgetting" in (out / "report.md").read_text().split("Failed runs")[-1]


def _cfg(tmp_path: Path, methods: dict) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump({"dataset": "digits", "model": "mlp", "forget": ["class:3"], "train": {"epochs": 2},
                             "device": "cpu", "methods": methods}))  # fmt: skip
    return p


def _audit(tmp_path: Path, net: torch.nn.Module):
    """``unlearnkit audit`` of ``net`` (an mlp checkpoint) against digits class:3; the CLI result and its out."""
    ckpt = uk.save_checkpoint(net, tmp_path / "audited.safetensors")
    cfg = tmp_path / "scenario.yaml"
    cfg.write_text("dataset: digits\nmodel: mlp\nforget: ['class:3']\ntrain: {epochs: 2}\ndevice: cpu\n")
    out = tmp_path / "a"
    return _invoke(["audit", "--model", str(ckpt), "--config", str(cfg), "--out", str(out)]), out


def test_audit_of_a_nan_checkpoint_is_failed(tmp_path: Path) -> None:
    net = uk.create_model("mlp", 10, (1, 8, 8))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(float("nan"))
    res, out = _audit(tmp_path, net)
    assert res.exit_code == 1, res.output
    runs = {r["method"]: r for r in ResultsStore(out / "results.db").runs()}
    assert runs["audit"]["status"] == "failed" and "non-finite weights" in runs["audit"]["error"]
    assert runs["original"]["status"] == "ok"
    _json_extract_ok(out / "results.db")


def test_collapsed_model_is_scored_and_flagged(tmp_path: Path) -> None:
    """A model at chance with finite weights (as finetune at a huge learning rate can end): scored, flagged, exit 0."""
    net = uk.create_model("mlp", 10, (1, 8, 8))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()  # constant logits: predicts class 0 everywhere, ~chance accuracy
    res, out = _audit(tmp_path, net)
    assert res.exit_code == 0, res.output
    assert "flagged" in res.output
    # the report's warnings reach the console too (issue 18), one line each
    assert any(line.startswith("warning:") and "collapsed" in line for line in res.output.splitlines()), res.output
    runs = {r["method"]: r for r in ResultsStore(out / "results.db").runs()}
    assert runs["audit"]["status"] == "ok" and runs["audit"]["flags"]
    assert runs["audit"]["flags"][0].startswith("collapsed:")
    assert not runs["original"]["flags"]
    md = (out / "report.md").read_text()
    assert "Flagged runs (1)" in md and "collapsed" in md


def test_unwritable_cache_is_refused_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = tmp_path / "out"
    res = _invoke(["run", *TINY, "--methods", "finetune", "--out", str(out)],
                  env={"UNLEARNKIT_CACHE": str(blocker / "cache")})  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "model cache" in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_exit_1_on_failure_and_retry_failed_reruns(tmp_path: Path, monkeypatch) -> None:
    """A run that failed for a temporary reason is retried with --retry-failed; exit 1 then 0."""
    import unlearnkit.methods.finetune as ft

    out = tmp_path / "out"
    args = ["run", *TINY, "--methods", "finetune", "--out", str(out)]
    real = ft.Finetune._unlearn

    def boom(self, model, data, generator):
        raise RuntimeError("temporary failure")

    monkeypatch.setattr(ft.Finetune, "_unlearn", boom)
    res = _invoke(args)
    assert res.exit_code == 1 and "temporary failure" in res.output, res.output
    monkeypatch.setattr(ft.Finetune, "_unlearn", real)
    res = _invoke(args)  # without --retry-failed the failed row stays
    assert res.exit_code == 1 and "stored as failed" in res.output, res.output
    res = _invoke([*args, "--retry-failed"])
    assert res.exit_code == 0 and "1 runs (0 failed)" in res.output, res.output
    assert all(r["status"] == "ok" for r in ResultsStore(out / "results.db").runs())


def test_a_non_finite_ensemble_member_gives_no_epsilon_score() -> None:
    """The ε score's given unlearned models pass through the one member check: a NaN member is no number."""
    sc = uk.Scenario(dataset="digits", forget="random:0.1", seed=0)
    cfg = uk.TrainConfig(epochs=1)
    good = uk.train("mlp", sc, config=cfg, device="cpu")
    other = uk.train("mlp", sc, config=cfg, seed=1, device="cpu")
    nan = uk.train("mlp", sc, config=cfg, seed=2, device="cpu")
    with torch.no_grad():
        next(nan.parameters()).fill_(float("nan"))
    names = ["forget_quality", "final_score"]
    ok = uk.evaluate(good, sc, metrics=names, model_factory="mlp", train_config=cfg, device="cpu",
                     unlearned_models=[good, other])  # fmt: skip
    assert all(isinstance(ok[n], float) for n in names), ok
    bad = uk.evaluate(good, sc, metrics=names, model_factory="mlp", train_config=cfg, device="cpu",
                      unlearned_models=[good, nan])  # fmt: skip
    for n in names:
        assert isinstance(bad[n], uk.NotComputed) and "non-finite" in bad[n].reason, bad[n]
