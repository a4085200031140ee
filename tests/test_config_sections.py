"""Issue 12 item 6: the run config in sections (data, model, train, eval, run), flat files still accepted,
dotted overrides of any field (section paths or the old flat names), one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from unlearnkit._config import apply_overrides
from unlearnkit.cli import app
from unlearnkit.errors import ConfigError
from unlearnkit.experiments import ResultsStore, parse_config
from unlearnkit.experiments.config import FLAT_KEYS, flattened, load_config, sectioned
from unlearnkit.experiments.runner import plan
from unlearnkit.experiments.sweep import parse_sweep

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

FLAT = {"name": "x", "dataset": "digits", "model": "mlp", "model_kwargs": {}, "forget": ["class:3"],
        "methods": ["finetune"], "seeds": [0, 1], "train": {"epochs": 2}, "device": "cpu", "threads": 1,
        "lira_shadows": 4, "val_fraction": 0.2}  # fmt: skip
SECTIONED = {"name": "x", "data": {"dataset": "digits", "val_fraction": 0.2}, "model": {"name": "mlp"},
             "forget": ["class:3"], "methods": ["finetune"], "seeds": [0, 1], "train": {"epochs": 2},
             "eval": {"lira_shadows": 4}, "run": {"device": "cpu", "threads": 1}}  # fmt: skip


def test_flat_and_sectioned_files_are_the_same_config() -> None:
    a, b = parse_config(FLAT), parse_config(SECTIONED)
    assert a == b
    assert a.dataset == "digits" and a.data.val_fraction == 0.2 and a.model.name == "mlp"
    assert a.lira_shadows == 4 == a.eval.lira_shadows and a.threads == 1 == a.run.threads
    assert [c.key for c in plan(a)[0]] == [c.key for c in plan(b)[0]]


def test_flat_round_trip_and_replace() -> None:
    cfg = parse_config(SECTIONED)
    assert parse_config(cfg.flat()) == cfg
    assert parse_config(cfg.model_dump()) == cfg
    changed = cfg.replace(device="auto", methods=["retrain"])
    assert changed.run.device == "auto" and changed.methods == ["retrain"] and cfg.run.device == "cpu"
    assert flattened(SECTIONED)["lira_shadows"] == 4 and sectioned(FLAT)["eval"]["lira_shadows"] == 4


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            {"dataset": "digits", "data": {"dataset": "mnist1d"}},
            "dataset is given twice, as dataset and as data.dataset",
        ),
        ({"eval": {"lira_shadowz": 4}}, r"eval\.lira_shadowz: unknown key"),
        ({"data": "digits"}, "data"),
        ({"run": {"threads": -1}}, r"run\.threads"),
        ({"eval": {"ensemble_n": 1}}, r"eval\.ensemble_n: .*must be 0 \(off\) or >= 2"),
    ],
)
def test_section_errors_are_one_line(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        parse_config(data, "cfg.yaml")
    assert "\n" not in str(err.value)


def test_dotted_overrides_reach_sections_by_path_or_flat_name() -> None:
    base = sectioned(FLAT)
    by_path = apply_overrides(base, ["eval.lira_shadows=8", "run.device=auto", "model.kwargs={}"], aliases=FLAT_KEYS)
    by_flat = apply_overrides(base, ["lira_shadows=8", "device=auto", "model_kwargs={}"], aliases=FLAT_KEYS)
    assert parse_config(by_path) == parse_config(by_flat)
    assert parse_config(by_path).eval.lira_shadows == 8


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_benchmark_file_still_loads(path: Path) -> None:
    """Today's flat benchmark files load unchanged (sweep files through the sweep reader)."""
    from unlearnkit.experiments.config import ConceptRunConfig

    data = yaml.safe_load(path.read_text())
    if data.get("setting") == 3:  # a config kind of its own, read by the same load_config
        assert isinstance(load_config(path), ConceptRunConfig)
        return
    if path.name.startswith("sweep_"):
        parse_sweep(data, str(path))
        return
    cfg = load_config(path)
    assert cfg.dataset == data.get("dataset", "digits")
    assert cfg.model.name == data.get("model", "small_cnn")


def test_sweep_accepts_sections(tmp_path: Path) -> None:
    sw = parse_sweep(
        {**SECTIONED, "model": {"name": ["mlp", "small_cnn"]}, "methods": {"finetune": {"lr": [0.1, 0.01]}}}
    )
    assert sw.models == ["mlp", "small_cnn"] and len(sw.run_configs()) == 4
    assert all(c.eval.lira_shadows == 4 for c in sw.run_configs())


def test_cli_flags_and_overrides_on_a_sectioned_file(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({**SECTIONED, "seeds": [0], "eval": {}}))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", "--config", str(cfg), "--out", str(out), "-q", "--dataset", "digits",
                                   "train.epochs=1", "run.threads=1", "eval.metrics=[acc_test]"])  # fmt: skip
    assert res.exit_code == 0, res.output
    runs = ResultsStore(out / "results.db").runs()
    assert {r["method"] for r in runs} == {"original", "retrain", "finetune"}
    assert all(set(r["metrics"]) >= {"acc_test"} for r in runs)
    assert all(r["config"]["train"]["epochs"] == 1 for r in runs)
