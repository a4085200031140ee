"""Config limits and overrides: hostile YAML, value bounds, the cell-count guard, threads in the run key, KEY=VALUE.

Every refusal is one line (exit code 2 at the CLI) and happens before anything is written. The YAML bombs run
in a subprocess with a timeout, so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import unlearnkit.experiments as experiments_pkg
import unlearnkit.experiments.sweep as sweep_mod
from unlearnkit._config import (
    MAX_CELLS,
    MAX_EPOCHS,
    MAX_STEPS,
    ConfigWarning,
    StrictModel,
    apply_overrides,
    check_cell_count,
    read_yaml,
)
from unlearnkit.cli import app
from unlearnkit.errors import ConfigError
from unlearnkit.experiments import parse_config, run_benchmark
from unlearnkit.experiments.config import RunConfig, TrainSection
from unlearnkit.experiments.runner import BenchmarkResult, plan
from unlearnkit.experiments.sweep import RaySection, parse_sweep, run_sweep

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _invoke(args: list[str]):
    return runner.invoke(app, args, catch_exceptions=False)


def _one_line_exit_2(res) -> str:
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    return lines[0]


# -- one strict base -------------------------------------------------------------------------------------------


def test_every_config_kind_derives_from_the_strict_base():
    kinds = [RunConfig, TrainSection, RaySection]
    from unlearnkit.experiments import config as concept  # the setting-3 kind lives in the one config module

    kinds += [concept.ConceptRunConfig, concept.PretrainSection, concept.WorldSection, concept.ClipSection]
    assert all(issubclass(k, StrictModel) for k in kinds)
    from unlearnkit.experiments.config import _one_line, _Strict  # old names still import
    from unlearnkit.experiments.config import read_yaml as old_read_yaml

    assert _Strict is StrictModel and old_read_yaml is read_yaml and callable(_one_line)


# -- hostile YAML, in a subprocess -----------------------------------------------------------------------------


def _alias_bomb() -> str:
    """A ~400-byte config whose alias expansion has 9**9 (~387 million) leaves (it hung the planner before)."""
    lines = ["model_kwargs:", "  a: &a [x, x, x, x, x, x, x, x, x]"]
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  {cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


BOMBS = {
    "alias bomb": (_alias_bomb(), "values once aliases are expanded"),
    "deep flow nesting": ("seeds: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper than 64"),
    "deep block nesting": ("".join(" " * i + "k:\n" for i in range(700)) + " " * 700 + "v\n", "nested deeper"),
    "recursive alias": ("model_kwargs: &a {x: *a}\n", "recursive alias"),
    "too large": ("name: x\n" + "# " + "z" * (1 << 20) + "\n", "too large"),
    "not utf-8": (None, "not UTF-8"),
}


def test_bombs_are_in_the_documented_size():
    assert len(_alias_bomb()) < 700


#: runs every bomb through the CLI in one child process (one import of torch), one JSON line per case
_BOMB_SCRIPT = """
import json, sys, time
from typer.testing import CliRunner
from unlearnkit.cli import app
for path in sys.argv[1:]:
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["run", "--config", path, "--out", path + ".out", "-q"])
    print(json.dumps({"exit": res.exit_code, "output": res.output, "s": time.perf_counter() - t0}), flush=True)
"""


@pytest.fixture(scope="module")
def bomb_results(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("bombs")
    paths = []
    for i, (text, _) in enumerate(BOMBS.values()):
        path = root / f"bomb{i}.yaml"
        path.write_bytes(b"name: \xff\xfe\n" if text is None else text.encode())
        paths.append(str(path))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "UNLEARNKIT_CACHE": str(root / "cache")}
    proc = subprocess.run([sys.executable, "-c", _BOMB_SCRIPT, *paths], capture_output=True, text=True,
                          timeout=150, env=env)  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(BOMBS), proc.stdout + proc.stderr
    return {
        case: {**json.loads(line), "out": Path(p + ".out")} for case, line, p in zip(BOMBS, lines, paths, strict=True)
    }


@pytest.mark.parametrize("case", list(BOMBS), ids=list(BOMBS))
def test_hostile_yaml_fails_fast_in_one_line(case, bomb_results):
    res, expect = bomb_results[case], BOMBS[case][1]
    out = res["output"].strip()
    assert res["exit"] == 2, out
    assert len(out.splitlines()) == 1 and expect in out, out
    assert res["s"] < 10.0  # milliseconds in practice; generous for a loaded machine
    assert not res["out"].exists()


def test_ordinary_yaml_still_reads(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {lr: 0.1}\nmethods: {neggrad: *b, finetune: *b}\nseeds: [0, 1]\n")
    assert read_yaml(path) == {"base": {"lr": 0.1}, "methods": {"neggrad": {"lr": 0.1}, "finetune": {"lr": 0.1}},
                               "seeds": [0, 1]}  # fmt: skip


def test_no_unbounded_yaml_reads_left():
    """Every YAML read in the package goes through the bounded loader."""
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "src").rglob("*.py")
        if any(s in p.read_text() for s in ("yaml.safe_load", "yaml.load(", "yaml.full_load"))
    ]
    assert offenders == []


# -- bounds ----------------------------------------------------------------------------------------------------


BAD_VALUES = {
    "negative seed": ({"seeds": [-1]}, "seeds.0: Input should be greater than or equal to 0"),
    "huge seed": ({"seeds": [10**23]}, "seeds.0"),
    "seed 2**32": ({"seeds": [2**32]}, "seeds.0: Input should be less than 4294967296"),
    "too many seeds": ({"seeds": list(range(100_001))}, "seeds: List should have at most 100000 items"),
    "negative threads": ({"threads": -1}, "threads"),
    "threads above 256": ({"threads": 100_000}, "threads: Input should be less than or equal to 256"),
    "shadow models": ({"lira_shadows": 10**9}, "lira_shadows: Input should be less than or equal to 10000"),
    "zero epochs": ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than or equal to 1"),
    "epochs above the ceiling": ({"train": {"epochs": 10**9}}, "train.epochs = 1,000,000,000 is above the ceiling"),
    "method epochs": ({"methods": {"finetune": {"epochs": MAX_EPOCHS + 1}}}, "methods.finetune.epochs = 10,001"),
    "method steps": ({"methods": [{"name": "x", "params": {"noise_steps": MAX_STEPS + 1}}]}, "methods.x.noise_steps"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES), ids=list(BAD_VALUES))
def test_bounds_are_one_line_errors(case):
    data, expect = BAD_VALUES[case]
    with pytest.raises(ConfigError) as e:
        parse_config(data, "cfg.yaml")
    assert expect in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_edges_are_accepted_and_allow_long_lifts_the_ceilings():
    cfg = parse_config({"seeds": [0, 2**32 - 1], "train": {"epochs": MAX_EPOCHS}})
    assert cfg.seeds == [0, 2**32 - 1]
    long = {"train": {"epochs": 10**6}, "methods": {"finetune": {"epochs": 10**6}, "unsir": {"noise_steps": 10**7}}}
    assert parse_config({**long, "allow_long": True}).train.epochs == 10**6
    with pytest.raises(ConfigError, match="allow_long"):
        parse_config(long)


def test_threads_above_the_core_count_warn(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    with pytest.warns(ConfigWarning, match="threads: 8 is more than this machine's 4 CPU cores"):
        parse_config({"threads": 8})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_config({"threads": 4})


def test_concept_config_has_the_same_bounds():
    from unlearnkit.experiments import config as concept

    base = {"setting": 3, "clip": {"config": "clip_tiny"}}
    for data, expect in [
        ({"pretrain": {"epochs": 0}}, "pretrain.epochs: Input should be greater than or equal to 1"),
        ({"pretrain": {"epochs": 10**9}}, "pretrain.epochs = 1,000,000,000 is above the ceiling"),
        ({"methods": {"safe_clip": {"epochs": 10**9}}}, "methods.safe_clip.epochs"),
        ({"seeds": [-1]}, "seeds.0"),
        ({"threads": 1000}, "threads"),
        ({"pretrian": {}}, "pretrian: unknown key"),
    ]:
        with pytest.raises(ConfigError) as e:
            concept.parse_concept_config({**base, **data}, "c.yaml")
        assert expect in str(e.value), str(e.value)
    cfg = concept.parse_concept_config({**base, "pretrain": {"epochs": 10**5}, "allow_long": True})
    assert cfg.pretrain.epochs == 10**5


def test_sweep_seed_range_is_bounded_before_it_is_built():
    with pytest.raises(ConfigError, match=r"range \[0, 100000000000000000000000\] is out of bounds"):
        parse_sweep({"seeds": {"range": [0, 10**23]}}, "s.yaml")
    with pytest.raises(ConfigError, match="out of bounds"):
        parse_sweep({"seeds": {"range": [0, 200_000]}}, "s.yaml")


# -- the cell-count guard -------------------------------------------------------------------------------------


def test_many_cells_are_refused_before_anything_is_written(tmp_path):
    cfg = parse_config({"forget": ["class:3", "random:0.1"], "methods": ["finetune"], "seeds": list(range(10_000)),
                        "device": "cpu"})  # fmt: skip
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"^60,000 cells planned, more than 2,000: confirm with --yes"):
        run_benchmark(cfg, out)  # counted without building 20,000 scenarios
    assert not out.exists()
    small = cfg.model_copy(update={"seeds": [0, 1]})
    with pytest.raises(ConfigError, match="12 cells planned, more than 5"):
        run_benchmark(small, out, max_cells=5)
    assert len(plan(small)[0]) == 12  # the count is plan's


def test_many_cells_via_the_cli_need_yes(tmp_path):
    out = tmp_path / "out"
    seeds = ",".join(str(s) for s in range(1_000))
    res = _invoke(["run", "--seeds", seeds, "--methods", "finetune", "--device", "cpu", "--out", str(out), "-q"])
    assert "6,000 cells planned, more than 2,000: confirm with --yes" in _one_line_exit_2(res)
    assert not out.exists()


def test_above_the_limit_with_confirmation_warns():
    with pytest.warns(ConfigWarning, match="2,001 cells planned"):
        check_cell_count(MAX_CELLS + 1, None)
    check_cell_count(MAX_CELLS, MAX_CELLS)  # at the limit: fine


def test_sweep_refuses_a_huge_grid_before_planning(tmp_path):
    sw = parse_sweep({"model": ["mlp", "small_cnn"], "seeds": {"range": [0, 5_000]}, "methods": ["finetune"],
                      "forget": ["class:3"], "device": "cpu"}, "s.yaml")  # fmt: skip
    with pytest.raises(ConfigError, match="at least 10,000 cells planned, more than 2,000"):
        run_sweep(sw, tmp_path / "out")
    small = parse_sweep({"model": "mlp", "seeds": [0, 1], "methods": ["finetune"], "forget": ["class:3"],
                         "device": "cpu"}, "s.yaml")  # fmt: skip
    with pytest.raises(ConfigError, match=r"^6 cells planned, more than 5"):  # exact count after planning
        run_sweep(small, tmp_path / "out", max_cells=5)
    assert not (tmp_path / "out").exists()


# -- threads in the run key -----------------------------------------------------------------------------------


def test_threads_and_determinism_enter_the_run_key():
    base = {"forget": ["class:3"], "methods": ["finetune"], "device": "cpu"}
    one = plan(parse_config({**base, "threads": 1}))[0]
    zero = plan(parse_config({**base, "threads": 0}))[0]
    assert [c.identity()["threads"] for c in one] == [1] * len(one)
    assert {c.identity()["deterministic"] for c in one} == {True}
    assert not {c.key for c in one} & {c.key for c in zero}


def test_cli_threads_1_and_0_are_different_runs(tmp_path):
    out = tmp_path / "out"
    common = ["run", "--forget", "class:3", "--methods", "finetune", "--model", "mlp", "--epochs", "1",
              "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "-q",
              "methods.finetune.epochs=1"]  # fmt: skip
    first = _invoke([*common, "--threads", "1"])
    assert first.exit_code == 0 and "3 runs (0 failed), 0 already stored" in first.output, first.output
    second = _invoke([*common, "--threads", "0"])
    assert second.exit_code == 0 and "3 runs (0 failed), 0 already stored" in second.output, second.output
    runs = experiments_pkg.ResultsStore(out / "results.db").runs()
    assert len(runs) == 6 and len({r["key"] for r in runs}) == 6
    assert sorted(r["config"]["threads"] for r in runs) == [0, 0, 0, 1, 1, 1]


# -- KEY=VALUE overrides --------------------------------------------------------------------------------------


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Replace run_benchmark / run_sweep: capture the validated config instead of running it."""
    seen: dict = {}

    def fake_run(cfg, out_dir, **kw):
        seen["cfg"], seen["kw"] = cfg, kw
        return BenchmarkResult(out_dir=Path(out_dir))

    def fake_sweep(sw, out_dir, **kw):
        seen["sweep"], seen["kw"] = sw, kw
        return BenchmarkResult(out_dir=tmp_path)

    monkeypatch.setattr(experiments_pkg, "run_benchmark", fake_run)
    monkeypatch.setattr(sweep_mod, "run_sweep", fake_sweep)
    return seen


def test_dotted_overrides_set_any_field(captured, tmp_path):
    res = _invoke(["run", "train.epochs=5", "seeds=[0, 1]", "methods=[finetune, scrub]", "methods.scrub.lr=1e-3",
                   "model_kwargs.hidden=32", "--out", str(tmp_path / "o"), "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = captured["cfg"]
    assert cfg.train.epochs == 5 and cfg.seeds == [0, 1] and cfg.model_kwargs == {"hidden": 32}
    assert {s.name: s.params for s in cfg.method_specs()} == {"finetune": {}, "scrub": {"lr": 1e-3}}
    assert captured["kw"]["max_cells"] == MAX_CELLS


def test_method_override_in_a_config_file_after_the_flags(captured, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"methods": {"scrub": {"epochs": 2}, "finetune": {}}, "train": {"epochs": 4}}))
    res = _invoke(["run", "--config", str(path), "methods.scrub.lr=0.01", "train.epochs=5", "--epochs", "3",
                   "--threads", "0", "--yes", "--out", str(tmp_path / "o"), "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = captured["cfg"]
    assert {s.name: s.params for s in cfg.method_specs()} == {"scrub": {"epochs": 2, "lr": 0.01}, "finetune": {}}
    assert cfg.train.epochs == 5 and cfg.threads == 0 and captured["kw"]["max_cells"] is None
    res = _invoke(["run", "--methods", "finetune,scrub", "methods.scrub.lr=0.5", "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    assert {s.name: s.params for s in captured["cfg"].method_specs()} == {"finetune": {}, "scrub": {"lr": 0.5}}


BAD_OVERRIDES = {
    "unknown key": (["train.epoch=5"], "with the command-line options: train.epoch: unknown key"),
    "unknown top-level key": (["epochz=5"], "epochz: unknown key"),
    "method not configured": (["methods=[finetune]", "methods.scrub.lr=1e-3"],
                              "method 'scrub' is not among the configured methods: finetune"),
    "methods all": (["methods.scrub.lr=1e-3"], "method 'scrub' is not among the configured methods: all methods"),
    "not key=value": (["train.epochs"], "expected KEY=VALUE (e.g. train.epochs=5), got 'train.epochs'"),
    "into a scalar": (["train.epochs.x=1"], "train.epochs is not a section (it holds 30)"),
    "bad yaml value": (["seeds=[0,"], "is not valid YAML"),
    "bad value": (["train.lr=-1"], "train.lr: Input should be greater than 0"),
    "long without the flag": (["train.epochs=20000"], "set allow_long: true (or --allow-long)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_OVERRIDES), ids=list(BAD_OVERRIDES))
def test_bad_overrides_are_one_line(case, captured, tmp_path):
    args, expect = BAD_OVERRIDES[case]
    out = tmp_path / "o"
    line = _one_line_exit_2(_invoke(["run", *args, "--out", str(out), "-q"]))
    assert expect in line, line
    assert "cfg" not in captured and not out.exists()


def test_allow_long_flag(captured, tmp_path):
    res = _invoke(["run", "train.epochs=20000", "--allow-long", "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    assert captured["cfg"].train.epochs == 20_000 and captured["cfg"].allow_long


def test_cli_prints_the_threads_warning_once(captured, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    res = _invoke(["run", "--threads", "3", "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    assert res.output.count("warning: threads: 3 is more than this machine's 2 CPU cores") == 1, res.output


def test_sweep_overrides(captured, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"model": "mlp", "forget": ["class:3"], "methods": {"neggrad": {"lr": 1e-3}}}))
    res = _invoke(["sweep", str(path), "methods.neggrad.lr=[1.0e-4, 1.0e-3]", "seeds=[0, 1]", "--yes", "-q"])
    assert res.exit_code == 0, res.output
    sw = captured["sweep"]
    assert sw.methods == [("neggrad", {"lr": [1e-4, 1e-3]})] and sw.seeds == [0, 1]
    assert captured["kw"]["max_cells"] is None
    line = _one_line_exit_2(_invoke(["sweep", str(path), "methods.scrub.lr=1", "-q"]))
    assert "method 'scrub' is not among the configured methods: neggrad" in line


def test_apply_overrides_leaves_its_input_alone():
    data = {"methods": ["finetune", {"name": "scrub", "params": {"lr": 1}}], "train": {"epochs": 2}}
    out = apply_overrides(data, ["methods.scrub.lr=2", "methods.finetune={epochs: 1}", "train.lr=0.1"])
    assert out == {"methods": [{"name": "finetune", "params": {"epochs": 1}}, {"name": "scrub", "params": {"lr": 2}}],
                   "train": {"epochs": 2, "lr": 0.1}}  # fmt: skip
    assert data == {"methods": ["finetune", {"name": "scrub", "params": {"lr": 1}}], "train": {"epochs": 2}}


def test_overrides_reach_a_setting3_config(monkeypatch, tmp_path):
    pytest.importorskip("unlearnkit.concept")
    seen: dict = {}

    def fake_run(cfg, out_dir, **kw):
        seen["cfg"] = cfg
        return BenchmarkResult(out_dir=Path(out_dir))

    monkeypatch.setattr(experiments_pkg, "run_benchmark", fake_run)  # the one runner, for every setting
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"setting": 3, "clip": {"config": "clip_tiny"}, "methods": {"safe_clip": {}}}))
    res = _invoke(["run", "--config", str(path), "pretrain.lr=1e-2", "methods.safe_clip.epochs=2", "--epochs", "3",
                   "--seeds", "4", "--out", str(tmp_path / "o"), "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = seen["cfg"]
    assert (cfg.pretrain.lr, cfg.pretrain.epochs, cfg.seeds) == (1e-2, 3, [4])
    assert {s.name: s.params for s in cfg.method_specs()} == {"safe_clip": {"epochs": 2}}
    line = _one_line_exit_2(_invoke(["run", "--config", str(path), "pretrain.epochz=1", "--out", str(tmp_path / "o")]))
    assert "pretrain.epochz: unknown key" in line
