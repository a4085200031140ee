"""End-to-end tests of the runner and the CLI: reports, resume, determinism, and every bad-input case.

Each bad-input case must print one line naming the problem, exit with code 2, and leave nothing in
``results.db``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.experiments import ResultsStore, parse_config, run_benchmark

runner = CliRunner()

#: a fast benchmark: few epochs, two cheap methods (retrain is always added)
FAST = ["--epochs", "8", "--methods", "finetune,neggrad", "--device", "cpu", "--quiet"]
TIMING = ("time_s", "time_ratio_vs_retrain", "peak_mem_mb")


def _invoke(args: list[str]):
    return runner.invoke(app, args, catch_exceptions=False)


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """One fast CLI run, shared by the checks below."""
    out = tmp_path_factory.mktemp("fast") / "out"
    res = _invoke(["run", *FAST, "--forget", "class:3", "--forget", "random:0.1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_run_writes_store_and_three_reports(fast_run):
    out, output = fast_run
    for name in ("results.db", "report.json", "report.md", "report.html"):
        assert (out / name).is_file(), name
    runs = json.loads((out / "report.json").read_text())["runs"]
    methods = {(r["scenario"]["forget"], r["method"]) for r in runs}
    for forget in ("class:3", "random:0.1"):
        for m in ("original", "retrain", "finetune", "neggrad"):
            assert (forget, m) in methods
    assert all(r["status"] == "ok" for r in runs)
    md = (out / "report.md").read_text()
    assert md.index("| retrain") < md.index("| finetune")  # retrain row first
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert "models trained" in output


def test_class_request_retrain_forgets_and_original_knows(fast_run):
    out, _ = fast_run
    runs = json.loads((out / "report.json").read_text())["runs"]
    by = {(r["scenario"]["forget"], r["method"]): r["metrics"] for r in runs}
    assert by[("class:3", "retrain")]["acc_forget_test"] == 0.0
    assert by[("class:3", "original")]["acc_forget_test"] >= 0.9
    # sample-level requests have no forget-test split: reported as not computed, never as a number
    assert str(by[("random:0.1", "finetune")]["acc_forget_test"]).startswith("not computed:")


def test_rerun_trains_nothing_and_skips_stored(fast_run):
    out, _ = fast_run
    before = _rows(out / "results.db")
    res = _invoke(["run", *FAST, "--forget", "class:3", "--forget", "random:0.1", "--out", str(out)])
    assert res.exit_code == 0
    assert f"0 runs (0 failed), {before} already stored, 0 models trained" in res.output
    assert _rows(out / "results.db") == before


def test_same_seed_same_metrics_in_a_fresh_store(fast_run, tmp_path):
    out, _ = fast_run
    res = _invoke(["run", *FAST, "--forget", "class:3", "--out", str(tmp_path / "again")])
    assert res.exit_code == 0
    a = {(r["method"]): r["metrics"] for r in ResultsStore(out / "results.db").runs()
         if r["scenario"]["forget"] == "class:3"}  # fmt: skip
    b = {(r["method"]): r["metrics"] for r in ResultsStore(tmp_path / "again" / "results.db").runs()}
    assert a.keys() == b.keys()
    for m in a:
        for k, v in a[m].items():
            if k not in TIMING:
                assert b[m][k] == v, (m, k)


def test_splits_are_stored_with_each_run(fast_run):
    out, _ = fast_run
    store = ResultsStore(out / "results.db")
    run = store.runs()[0]
    splits = store.splits(run["splits_hash"])
    assert splits is not None and set(splits) >= {"forget", "retain", "val", "test"}
    assert not set(splits["forget"]) & set(splits["retain"])


def test_report_command_regenerates(fast_run):
    out, _ = fast_run
    (out / "report.md").unlink()
    res = _invoke(["report", str(out)])
    assert res.exit_code == 0
    assert (out / "report.md").is_file()


def test_list_commands():
    """Every setting is listed: setting-3 (CLIP) methods, metrics, datasets and small CLIPs beside the rest."""
    for what, expect in (("methods", ["neggrad_plus", "lora_bounded", "safe_clip"]),
                         ("metrics", ["acc_forget_test", "forget_quality", "unsafe_rate_tstar"]),
                         ("datasets", ["digits", "concept_world", "visu"]),
                         ("models", ["small_cnn", "clip_small"])):  # fmt: skip
        res = _invoke(["list", what])
        assert res.exit_code == 0 and all(e in res.output for e in expect), (what, res.output)


def test_list_shows_each_entrys_setting():
    """One registry per kind: CLIP entries are rows of the same table, with their setting (and modality)."""
    rows = {line.split("│")[1].strip(): line for line in _invoke(["list", "methods"]).output.splitlines()
            if line.count("│") > 2}  # fmt: skip
    assert "│ 3 " in rows["safe_clip"] and "clip" in rows["safe_clip"] and "│ 1 " in rows["neggrad"]
    metrics = {e["name"]: e for e in json.loads(_invoke(["list", "metrics", "--json"]).output)}
    assert metrics["t2v_r1"]["settings"] == [3] and metrics["acc_forget"]["settings"] == [1, 2]


def test_help_has_examples():
    res = _invoke(["--help"])
    assert res.exit_code == 0 and "unlearnkit run" in res.output


def test_nan_loss_is_recorded_failed_and_others_go_on(tmp_path):
    cfg = parse_config({
        "forget": ["class:3"], "train": {"epochs": 2}, "device": "cpu", "model": "mlp",
        "methods": [{"name": "finetune", "params": {"lr": 1e30, "epochs": 2}}, "neggrad_plus"],
    })  # fmt: skip
    res = run_benchmark(cfg, tmp_path / "out")
    runs = {r["method"]: r for r in ResultsStore(tmp_path / "out" / "results.db").runs()}
    assert runs["finetune"]["status"] == "failed"
    assert "nan" in runs["finetune"]["error"].lower()
    assert runs["neggrad_plus"]["status"] == "ok" and runs["retrain"]["status"] == "ok"
    assert res.failed == 1
    assert "finetune" in (tmp_path / "out" / "report.md").read_text().split("Failed")[-1]


# -- bad input: one line, exit code 2, nothing written -------------------------------------------------------


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


BAD_CLI = {
    "unknown dataset": (["--dataset", "digitz"], "did you mean 'digits'"),
    "unknown model": (["--model", "small_cn"], "did you mean 'small_cnn'"),
    "unknown method": (["--methods", "neggrad_pluss"], "did you mean 'neggrad_plus'"),
    "class not in dataset": (["--forget", "class:12"], "forget class 12 is not in dataset 'digits'"),
    "fraction outside (0,1)": (["--forget", "random:1.5"], "forget fraction must be in (0, 1)"),
    "count >= training size": (["--forget", "random:5000"], "must be smaller than the training set"),
    "malformed spec": (["--forget", "klass:3"], "unknown forget kind 'klass'"),
    "bad seeds": (["--seeds", "0,x"], "--seeds must be comma-separated integers"),
    "bad device": (["--device", "tpu"], "unknown device 'tpu'"),
    "missing config": (["--config", "/nonexistent/cfg.yaml"], "config file not found"),
}


@pytest.mark.parametrize("case", list(BAD_CLI), ids=list(BAD_CLI))
def test_bad_cli_input(case, tmp_path):
    args, expect = BAD_CLI[case]
    out = tmp_path / "out"
    res = _invoke(["run", *args, "--out", str(out), "--quiet"])
    assert res.exit_code == 2, res.output
    assert expect in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert _rows(out / "results.db") == 0


def _indices_case(tmp_path: Path, text: str) -> list[str]:
    return ["--forget", f"indices:{_write(tmp_path / 'idx.txt', text)}"]


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("", "lists no indices"),
        ("1 2 99999", "must be in [0,"),
        ("1 2 2", "more than once"),
        ("1 2 x", "is not an integer"),
    ],
    ids=["empty", "out-of-range", "duplicated", "not-integers"],
)
def test_bad_indices_file(tmp_path, text, expect):
    out = tmp_path / "out"
    res = _invoke(["run", *_indices_case(tmp_path, text), "--out", str(out), "--quiet"])
    assert res.exit_code == 2 and expect in res.output
    assert _rows(out / "results.db") == 0


BAD_CONFIGS = {
    "malformed yaml": ("forget: [class:3\nseeds: 0", "is not valid YAML"),
    "unknown key": ("dataset: digits\nepochz: 3\n", "epochz: unknown key"),
    "unknown method param": ("methods: [{name: neggrad, params: {lrr: 0.1}}]\n", "did you mean 'lr'"),
    "negative lr": ("methods: [{name: neggrad, params: {lr: -0.1}}]\n", "parameter 'lr' must be"),
    "unknown metric": ("metrics: [acc_forgett]\n", "did you mean 'acc_forget'"),
    "negative train lr": ("train: {lr: -1}\n", "train.lr"),
    "top level not a mapping": ("- a\n- b\n", "expected a mapping"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_bad_config(case, tmp_path):
    text, expect = BAD_CONFIGS[case]
    cfg = _write(tmp_path / "cfg.yaml", text)
    out = tmp_path / "out"
    res = _invoke(["run", "--config", str(cfg), "--out", str(out), "--quiet"])
    assert res.exit_code == 2, res.output
    assert expect in res.output, res.output
    assert _rows(out / "results.db") == 0


def test_out_not_writable(tmp_path):
    blocker = _write(tmp_path / "a_file", "x")
    res = _invoke(["run", "--out", str(blocker / "sub"), "--quiet", "--epochs", "1"])
    assert res.exit_code == 2 and "is not writable" in res.output


def test_checkpoint_not_safetensors_or_not_fitting(tmp_path):
    import torch

    import unlearnkit as uk

    model = uk.create_model("mlp", 10, (1, 8, 8))
    bad = _write(tmp_path / "model.safetensors", "not a safetensors file")
    with pytest.raises(uk.UnlearnkitError, match="is not a safetensors checkpoint"):
        uk.load_checkpoint(model, bad)
    other = uk.create_model("mlp", 3, (1, 8, 8))
    path = uk.save_checkpoint(other, tmp_path / "other.safetensors", {"model": "mlp"})
    with pytest.raises(uk.UnlearnkitError, match="does not fit the model"):
        uk.load_checkpoint(model, path)
    assert torch.isfinite(next(model.parameters())).all()


def test_config_file_round_trip(tmp_path):
    cfg = {"forget": ["class:1"], "methods": ["neggrad"], "train": {"epochs": 2}, "device": "cpu",
           "model": "mlp"}  # fmt: skip
    path = _write(tmp_path / "c.yaml", yaml.safe_dump(cfg))
    res = _invoke(["run", "--config", str(path), "--out", str(tmp_path / "o"), "--quiet"])
    assert res.exit_code == 0, res.output
    runs = ResultsStore(tmp_path / "o" / "results.db").runs()
    assert {r["method"] for r in runs} == {"original", "retrain", "neggrad"}
    accs = [r["metrics"]["acc_test"] for r in runs]
    assert all(0.0 <= a <= 1.0 for a in accs) and np.isfinite(accs).all()


# -- audit: any model, evaluated against the scenario's references -------------------------------------------


@pytest.fixture
def audit_config(tmp_path) -> Path:
    return _write(tmp_path / "scenario.yaml", "dataset: digits\nmodel: mlp\nforget: ['class:3']\n"
                  "train: {epochs: 3}\ndevice: cpu\n")  # fmt: skip


def test_audit_evaluates_an_external_checkpoint(tmp_path, audit_config):
    import torch

    import unlearnkit as uk

    torch.manual_seed(0)
    model = uk.create_model("mlp", 10, (1, 8, 8))  # "made elsewhere": an untrained net
    ckpt = uk.save_checkpoint(model, tmp_path / "external.safetensors")
    res = _invoke(["audit", "--model", str(ckpt), "--config", str(audit_config), "--out", str(tmp_path / "a"),
                   "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    runs = {r["method"]: r for r in json.loads((tmp_path / "a" / "report.json").read_text())["runs"]}
    assert set(runs) == {"original", "retrain", "audit"}
    assert runs["audit"]["params"]["sha256"]
    assert 0.0 <= runs["audit"]["metrics"]["acc_test"] <= 0.5  # an untrained net is near chance
    assert str(runs["audit"]["metrics"]["time_s"]).startswith("not computed:")


def test_audit_refuses_bad_checkpoints(tmp_path, audit_config):
    import unlearnkit as uk

    junk = _write(tmp_path / "junk.safetensors", "definitely not safetensors")
    other = uk.save_checkpoint(uk.create_model("mlp", 3, (1, 8, 8)), tmp_path / "other.safetensors")
    for ckpt, expect in ((junk, "is not a safetensors checkpoint"), (other, "does not fit the model")):
        res = _invoke(["audit", "--model", str(ckpt), "--config", str(audit_config), "--out", str(tmp_path / "b"),
                       "--quiet"])  # fmt: skip
        assert res.exit_code == 2 and expect in res.output, res.output
        assert _rows(tmp_path / "b" / "results.db") == 0


def test_audit_scores_a_set_of_checkpoints(tmp_path):
    """N >= 2 checkpoints (a folder): one row each, and the set's ε score (F) on every row of the set."""
    import torch

    import unlearnkit as uk

    cfg = _write(tmp_path / "random.yaml", "dataset: digits\nmodel: mlp\nforget: ['random:0.1']\n"
                 "train: {epochs: 2}\ndevice: cpu\n")  # fmt: skip
    folder = tmp_path / "runs_of_my_method"
    folder.mkdir()
    for seed in (0, 1):
        torch.manual_seed(seed)
        uk.save_checkpoint(uk.create_model("mlp", 10, (1, 8, 8)), folder / f"seed{seed}.safetensors")
    res = _invoke(["audit", "--model", str(folder), "--config", str(cfg), "--out", str(tmp_path / "a"), "--quiet"])
    assert res.exit_code == 0, res.output
    audits = [r for r in ResultsStore(tmp_path / "a" / "results.db").runs() if r["method"] == "audit"]
    assert sorted(Path(r["params"]["checkpoint"]).name for r in audits) == ["seed0.safetensors", "seed1.safetensors"]
    f = [r["metrics"]["forget_quality"] for r in audits]
    assert isinstance(f[0], float) and 0.0 <= f[0] <= 1.0 and f[0] == f[1]  # one score for the set
    assert audits[0]["metrics"]["acc_test"] != audits[1]["metrics"]["acc_test"]  # but each row its own model
    assert all(r["config"]["ensemble_path"] == "grouped" for r in audits)  # ensemble_mode auto's path for an MLP
    one = _invoke(["audit", "--model", str(folder / "seed0.safetensors"), "--config", str(cfg),
                   "--out", str(tmp_path / "one"), "--quiet"])  # fmt: skip
    assert one.exit_code == 0, one.output
    (row,) = [r for r in ResultsStore(tmp_path / "one" / "results.db").runs() if r["method"] == "audit"]
    assert str(row["metrics"]["forget_quality"]).startswith("not computed:")


def test_audit_refuses_a_bad_set(tmp_path, audit_config):
    import unlearnkit as uk

    ckpt = uk.save_checkpoint(uk.create_model("mlp", 10, (1, 8, 8)), tmp_path / "m.safetensors")
    (tmp_path / "empty").mkdir()
    for models, expect in (([ckpt, ckpt], "is given twice"), ([tmp_path / "empty"], "has no .safetensors")):
        args = [a for m in models for a in ("--model", str(m))]
        res = _invoke(["audit", *args, "--config", str(audit_config), "--out", str(tmp_path / "b"), "--quiet"])
        assert res.exit_code == 2 and expect in res.output and len(res.output.strip().splitlines()) == 1, res.output
        assert _rows(tmp_path / "b" / "results.db") == 0


#: a tiny setting-3 (CLIP concept) config: the CLI dispatches on its ``setting: 3``
TINY_CONCEPT = {
    "name": "tiny_concept", "setting": 3, "dataset": "concept_world",
    "world": {"n_train": 32, "n_val": 8, "n_test": 16},
    "clip": {"config": "clip_tiny"}, "pretrain": {"epochs": 1, "batch_size": 16},
    "methods": {"unsafe_projection": {}}, "seeds": [0], "device": "cpu",
}  # fmt: skip


def test_cli_runs_a_setting3_config_and_refuses_its_bad_input(tmp_path):
    path = tmp_path / "concept.yaml"
    path.write_text(yaml.safe_dump({**TINY_CONCEPT, "cache_dir": str(tmp_path / "cache")}))
    res = _invoke(["run", "--config", str(path), "--out", str(tmp_path / "ok"), "--quiet"])
    assert res.exit_code == 0, res.output
    runs = ResultsStore(tmp_path / "ok" / "results.db").runs()
    assert sorted(r["method"] for r in runs) == ["original", "unsafe_projection"]
    assert all(r["scenario"]["forget"] == "concept:unsafe" and r["status"] == "ok" for r in runs)
    for extra, msg in [(["--methods", "safe_clipp"], "safe_clipp"), (["--forget", "class:3"], "--forget")]:
        out = tmp_path / "bad"
        res = _invoke(["run", "--config", str(path), "--out", str(out), "--quiet", *extra])
        assert res.exit_code == 2 and msg in res.output and len(res.output.strip().splitlines()) == 1, res.output
        assert _rows(out / "results.db") == 0


def test_cli_audits_an_exported_clip_folder_against_a_setting3_scenario(tmp_path):
    """A save_models export (safetensors + config + word_tokenizer.json) scored beside the seed's original CLIP."""
    path = tmp_path / "concept.yaml"
    path.write_text(yaml.safe_dump({**TINY_CONCEPT, "save_models": True, "cache_dir": str(tmp_path / "cache")}))
    assert _invoke(["run", "--config", str(path), "--out", str(tmp_path / "run"), "--quiet"]).exit_code == 0
    (folder,) = (tmp_path / "run" / "models").iterdir()
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json", "word_tokenizer.json"}
    res = _invoke(["audit", "--model", str(folder), "--config", str(path), "--out", str(tmp_path / "a"), "--quiet"])
    assert res.exit_code == 0, res.output
    audited = {r["method"]: r for r in ResultsStore(tmp_path / "a" / "results.db").runs()}
    stored = {r["method"]: r for r in ResultsStore(tmp_path / "run" / "results.db").runs()}
    assert sorted(audited) == ["audit", "original"] and audited["audit"]["params"]["checkpoint"] == str(folder)
    assert audited["audit"]["scenario"] == stored["unsafe_projection"]["scenario"]
    for name in ("t2v_r1", "tstar_to_v_union_r1", "unsafe_rate_tstar", "zero_shot_acc"):  # the export's own figures
        assert audited["audit"]["metrics"][name] == stored["unsafe_projection"]["metrics"][name], name
    assert audited["original"]["metrics"]["t2v_r1"] == stored["original"]["metrics"]["t2v_r1"]
    for bad, msg in [(folder / "model.safetensors", "takes a CLIP folder"), (tmp_path / "run", "no config.json")]:
        out = tmp_path / "bad"
        res = _invoke(["audit", "--model", str(bad), "--config", str(path), "--out", str(out), "--quiet"])
        assert res.exit_code == 2 and msg in res.output and len(res.output.strip().splitlines()) == 1, res.output
        assert _rows(out / "results.db") == 0
    # the same folder with NaN weights: a failed audit row with the reason, never scored (exit 1)
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(folder / "model.safetensors"))
    res = _invoke(["audit", "--model", str(folder), "--config", str(path), "--out", str(tmp_path / "nan"), "--quiet"])
    assert res.exit_code == 1, res.output
    nan_rows = {r["method"]: r for r in ResultsStore(tmp_path / "nan" / "results.db").runs()}
    assert nan_rows["audit"]["status"] == "failed" and "non-finite weights" in nan_rows["audit"]["error"]
    assert nan_rows["audit"]["metrics"] == {} and nan_rows["original"]["status"] == "ok"
