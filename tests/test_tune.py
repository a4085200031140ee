"""`unlearnkit tune`: search spaces (a contract generated from the registry), proxy requests that never touch
an evaluated request, resume after SIGKILL, the tuning history in the store, the report sections and bad input.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import unlearnkit as uk
from unlearnkit.cli import app
from unlearnkit.errors import ConfigError
from unlearnkit.experiments import ResultsStore, parse_config
from unlearnkit.experiments.store import SCHEMA_VERSION
from unlearnkit.experiments.tune import TuneSettings, proxy_requests, tune
from unlearnkit.methods import (
    METHODS,
    POSITIVE,
    POSITIVE_INT,
    Choice,
    IntRange,
    LogUniform,
    Method,
    Uniform,
    list_methods,
    search_space_problems,
)
from unlearnkit.reports.tuning import gap_by_kind, tune_sections

optuna = pytest.importorskip("optuna")  # the `tune` extra (part of `test`)

#: a config that tunes in seconds: a 2-epoch MLP on digits, one evaluated class, one proxy
TINY = {"dataset": "digits", "model": "mlp", "forget": ["class:1"], "seeds": [0], "methods": ["finetune"],
        "train": {"epochs": 2}, "device": "cpu", "relearn": False}  # fmt: skip


# -- the search-space contract, generated from the registry ---------------------------------------------------


@pytest.mark.parametrize("name", list_methods(setting=1))
def test_every_setting1_method_declares_a_valid_search_space(name):
    cls = METHODS.get(name)
    assert cls.search_space is not None, (
        f"method {name!r} declares no search space. Add, next to its _parameter_constraints in "
        f"{cls.__module__.replace('.', '/')}.py, a class attribute such as\n"
        f'    search_space = {{"lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(1, 10)}}\n'
        "(LogUniform / Uniform / IntRange / Choice from unlearnkit.methods._base; names among its hyperparameters "
        f"{cls._get_param_names()}; ranges inside their constraints), or `search_space = {{}}` when nothing is "
        "worth tuning, and say which in the file's docstring (see ssd.py)."
    )
    assert search_space_problems(cls) == []


class _Toy(Method):
    name = "toy"
    _parameter_constraints = {"lr": [POSITIVE], "epochs": [POSITIVE_INT]}

    def __init__(self, *, lr: float = 1e-3, epochs: int = 2) -> None:
        self.lr, self.epochs = lr, epochs


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        ({"lrr": LogUniform(1e-4, 1e-2)}, "'lrr', which is no hyperparameter (did you mean 'lr'?)"),
        ({"epochs": IntRange(0, 5)}, "reaches 0"),  # outside int in [1, inf)
        ({"lr": Uniform(-1.0, 1.0)}, "reaches -1.0"),
        ({"lr": LogUniform(1e-2, 1e-4)}, "is empty"),
        ({"epochs": Choice(())}, "has no values"),
    ],
)
def test_search_space_problems_name_the_mistake(space, needle, monkeypatch):
    monkeypatch.setattr(_Toy, "search_space", space)
    problems = search_space_problems(_Toy)
    assert problems and needle in problems[0], problems
    monkeypatch.setattr(_Toy, "search_space", {"lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(1, 5)})
    assert search_space_problems(_Toy) == []


def test_list_methods_params_shows_the_space(monkeypatch):
    monkeypatch.setattr("unlearnkit.experiments.config.load_concept_entries", lambda **_: False)  # no CLIP import
    res = CliRunner().invoke(app, ["list", "methods", "--params"])
    assert res.exit_code == 0
    block = res.output.split("ssd (setting 1")[1].split("(setting")[0]
    assert "selection_weighting = None" in block and "tune: log-uniform [1, 20]" in block


# -- proxies ----------------------------------------------------------------------------------------------------


def test_proxies_never_touch_an_evaluated_request():
    cfg = parse_config({"forget": ["class:1", "class:3", "class:7", "random:0.1"], "seeds": [0, 1, 2, 1000]})
    proxies = proxy_requests(cfg, 10, 4, seed=0)
    classes = [p for p in proxies if p[0].startswith("class:")]
    assert len(classes) == 4 and len([p for p in proxies if p[0] == "random:0.1"]) == 4
    for forget, seed in proxies:
        assert seed not in cfg.seeds
        if forget.startswith("class:"):
            assert not {int(c) for c in forget[6:].split(",")} & {1, 3, 7}
    assert len({f for f, _ in classes}) == 4  # distinct classes before any repeats
    assert proxy_requests(cfg, 10, 4, seed=0) == proxies  # deterministic
    two = parse_config({"forget": ["class:1,2"], "seeds": [0]})
    assert all(len(f[6:].split(",")) == 2 for f, _ in proxy_requests(two, 10, 3))
    with pytest.raises(ConfigError, match="no proxy class request is left"):
        proxy_requests(parse_config({"forget": [f"class:{c}" for c in range(10)]}), 10, 1)


def test_a_class_only_method_is_tuned_on_the_class_proxies_only():
    from unlearnkit.experiments.tune import _cells_for

    cfg = parse_config({**TINY, "forget": ["class:1", "random:0.1"]})
    proxies = proxy_requests(cfg, 10, 1)
    assert [f.split(":")[0] for f, _ in proxies] == ["class", "random"]
    cells = _cells_for(cfg, "boundary_shrink", proxies, TuneSettings())  # boundary methods serve class requests
    assert [(p.forget, p.seed) for p in cells] == [proxies[0]]
    assert cells[0].template.metrics == ["acc_forget_test", "acc_retain_test", "acc_test", "time_ratio_vs_retrain"]
    assert cells[0].template.relearn is None and cells[0].template.lira_shadows == 0
    both = _cells_for(cfg, "finetune", proxies, TuneSettings())
    assert [p.level for p in both] == ["class", "sample"] and both[1].template.metrics[0] == "acc_forget"


# -- an end-to-end tuning, resumed --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "out"
    cfg = parse_config(dict(TINY))
    res = tune(cfg, out, settings=TuneSettings(trials=3, proxies=1, startup_trials=2), compare=True)
    return cfg, out, res


def test_tune_stores_trials_on_proxies_only_and_writes_a_usable_yaml(tuned):
    cfg, out, res = tuned
    store = ResultsStore(out / "results.db", readonly=True)
    trials = store.trials()
    assert [t["number"] for t in trials] == [0, 1, 2] and res.ran == {"finetune": 3}
    assert trials[0]["info"]["defaults"] and trials[0]["params"] == {"lr": 1e-3, "epochs": 5, "optimizer": "adam"}
    evaluated = {(f, s) for f in cfg.forget for s in cfg.seeds}
    for t in trials:  # what each trial actually ran on
        for p in t["info"]["proxies"]:
            assert (p["forget"], p["seed"]) not in evaluated and p["seed"] not in cfg.seeds
            assert p["forget"] != "class:1"
    (study,) = store.studies()
    assert study["best_params"] == res.best["finetune"] and study["defaults"]["lr"] == 1e-3
    doc = yaml.safe_load((out / "tuned.yaml").read_text())
    again = parse_config(doc)
    assert again.forget == cfg.forget and again.method_specs()[0].params == res.best["finetune"]
    # compare=True: the evaluated requests ran at the defaults and at the tuned values; the report says so
    methods = {(r["method"], json.dumps(r["params"], sort_keys=True)) for r in store.runs()}
    assert len([m for m in methods if m[0] == "finetune"]) == (1 if res.best["finetune"] == {
        k: v for k, v in study["defaults"].items() if k in res.best["finetune"]} else 2)  # fmt: skip
    md = (out / "report.md").read_text()
    assert "## Tuning (proxy requests)" in md and "## Tuned vs defaults" in md


def test_tune_resumes_without_repeating_and_extends(tuned):
    cfg, out, _ = tuned
    before = ResultsStore(out / "results.db", readonly=True).trials()
    again = tune(cfg, out, settings=TuneSettings(trials=3, proxies=1, startup_trials=2), compare=False)
    assert again.ran == {}  # every trial is there: nothing reruns
    more = tune(cfg, out, settings=TuneSettings(trials=4, proxies=1, startup_trials=2), compare=False)
    assert more.ran == {"finetune": 1}
    after = ResultsStore(out / "results.db", readonly=True).trials()
    assert [t["number"] for t in after] == [0, 1, 2, 3]
    assert [(t["params"], t["value"]) for t in after[:3]] == [(t["params"], t["value"]) for t in before]


_DRIVER = """
import json, sys
from unlearnkit.experiments import parse_config
from unlearnkit.experiments.tune import TuneSettings, tune
tune(parse_config(json.loads(sys.argv[1])), sys.argv[2], settings=TuneSettings(trials=int(sys.argv[3]), proxies=1,
     startup_trials=2), compare=False)
"""


def _complete(db: Path) -> list[tuple[int, str]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as con:
            return con.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []


@pytest.mark.slow
def test_sigkilled_tuning_resumes_without_repeating_finished_trials(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, json.dumps(TINY), str(out), "6"], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if sum(s == "COMPLETE" for _, s in _complete(out / "tune.optuna.db")) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = [n for n, s in _complete(out / "tune.optuna.db") if s in ("COMPLETE", "PRUNED")]
    assert 2 <= len(finished) < 6, proc.stderr.read().decode()[-2000:]
    before = {t["number"]: (t["params"], t["value"]) for t in ResultsStore(out / "results.db").trials()}
    res = tune(parse_config(dict(TINY)), out, settings=TuneSettings(trials=6, proxies=1, startup_trials=2),
               compare=False)  # fmt: skip
    assert res.ran == {"finetune": 6 - len(finished)}  # only the missing trials ran
    states = _complete(out / "tune.optuna.db")
    assert sum(s in ("COMPLETE", "PRUNED") for _, s in states) == 6
    after = {t["number"]: (t["params"], t["value"]) for t in ResultsStore(out / "results.db").trials()}
    assert all(after[n] == before[n] for n in finished if n in before)


# -- the store ---------------------------------------------------------------------------------------------------


def test_a_version_2_store_reads_without_tunings_and_migrates_on_write(tmp_path):
    db = tmp_path / "results.db"
    with sqlite3.connect(db) as con:
        from unlearnkit.experiments.store import _CREATE

        for sql in _CREATE:
            con.execute(sql)
        con.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    assert ResultsStore(db, readonly=True).trials() == [] and ResultsStore(db, readonly=True).studies() == []
    store = ResultsStore(db)
    store.put_trial("s", 0, "ssd", "COMPLETE", 0.25, {"selection_weighting": 3.0}, {"time_ratio": float("inf")})
    store.put_study("s", "ssd", {"best_params": {"selection_weighting": 3.0}})
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    (t,) = ResultsStore(db, readonly=True).trials()
    assert t["value"] == 0.25 and t["params"] == {"selection_weighting": 3.0} and t["info"]["time_ratio"] == "inf"
    assert ResultsStore(db, readonly=True).studies()[0]["best_params"] == {"selection_weighting": 3.0}


# -- the report ---------------------------------------------------------------------------------------------------


def _run(method, params, forget, seed, f, r, t):
    return {"method": method, "params": params, "status": "ok", "seed": seed,
            "scenario": {"dataset": "d", "forget": forget, "seed": seed},
            "metrics": {"acc_forget_test": f, "acc_retain_test": r, "acc_test": t}}  # fmt: skip


def test_tuned_vs_defaults_gap_is_the_leaderboards_measure():
    runs = [
        _run("retrain", {}, "class:1", 0, 0.0, 0.98, 0.90), _run("retrain", {}, "class:1", 1, 0.0, 0.96, 0.88),
        _run("m", {"lr": 1}, "class:1", 0, 0.5, 0.90, 0.80), _run("m", {"lr": 1}, "class:1", 1, 0.3, 0.92, 0.82),
        _run("m", {"lr": 2}, "class:1", 0, 0.02, 0.97, 0.89),
        _run("retrain", {}, "class:3", 0, 0.0, 1.0, 0.9), _run("m", {"lr": 1}, "class:3", 0, 0.1, 0.9, 0.9),
    ]  # fmt: skip
    # class:1: mean over seeds, then |gap|: forget 0.4, retain 0.06, test 0.08 -> 0.18; class:3: (0.1+0.1+0)/3
    assert gap_by_kind(runs, "m", {"lr": 1}) == pytest.approx({"class": (0.18 + 0.2 / 3) / 2})
    assert gap_by_kind(runs, "m", {"lr": 2}) == pytest.approx({"class": (0.02 + 0.0 + 0.0) / 3})
    studies = [{"study": "m-x", "method": "m", "defaults": {"lr": 1}, "tuned_params": {"lr": 2}, "best_params":
                {"lr": 2}, "best_value": 0.01, "default_value": 0.2, "best_number": 1, "importance": {"lr": 1.0},
                "settings": {"trials": 2, "max_time_ratio": 0.5}, "proxies": [["class:5", 1000]]}]  # fmt: skip
    trials = [{"study": "m-x", "number": n, "state": "COMPLETE", "value": v, "params": {"lr": n + 1},
               "info": {"time_ratio": 0.1}} for n, v in ((0, 0.2), (1, 0.01))]  # fmt: skip
    tuning, versus = tune_sections(studies, trials, runs)
    assert "| m | 2/0/0 | 0.2000 | 0.0100 | 1 | 0.100 | lr=2 | lr (1.00) |" in tuning.markdown
    assert tuning.html.count("<img") == 2
    assert versus.data[0]["improvement"] == pytest.approx((0.18 + 0.2 / 3) / 2 - 0.02 / 3)


# -- bad input: one line, exit 2, nothing written --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--methods", "nope"], "unknown method 'nope'"),
        (["--trials", "0"], "trials must be an integer >= 1"),
        (["--methods", "retrain"], "none of ['retrain'] has hyperparameters to tune"),
        (["--methods", "sisa"], "'sisa' has nothing to tune"),
        (["--methods", "neggrad_l1"], "setting-2 method"),
        (["--methods", "ssd", "forget=[indices:x.txt]"], None),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, needle):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["tune", str(cfg), "--out", str(out), *args])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and res.output.startswith("error:")
    if needle:
        assert needle in res.output
    assert not out.exists()


def test_a_space_naming_no_parameter_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(METHODS.get("finetune"), "search_space", {"learning_rate": LogUniform(1e-4, 1e-2)})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    res = CliRunner().invoke(app, ["tune", str(cfg), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "'learning_rate', which is no hyperparameter" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# -- ssd's request-dependent α ------------------------------------------------------------------------------------


def test_ssd_alpha_follows_the_request_and_is_stored_with_the_run(tmp_path):
    from unlearnkit.experiments import plan, run_cell
    from unlearnkit.methods.ssd import PAPER_ALPHA, alpha_candidates

    assert alpha_candidates(10_000, 100)[0] == pytest.approx(100.0)  # from the bound |D|/|D_f| ...
    assert alpha_candidates(1000, 100)[-1] == 1.0  # ... down to 1
    assert alpha_candidates(1000, 1000) == [1.0]
    cfg = parse_config({**TINY, "methods": ["ssd"], "metrics": ["acc_forget_test"]})
    cells, _ = plan(cfg)
    (cell,) = [c for c in cells if c.method == "ssd"]
    assert cell.params["selection_weighting"] is None
    rec = run_cell(cell, cache_dir=str(tmp_path), device="cpu")
    resolved = rec.config["resolved_params"]
    assert resolved["selection_weighting_paper"] == PAPER_ALPHA
    assert 1.0 <= resolved["selection_weighting"] <= 10.5  # a digits class is ~10% of D: the bound is ~10
    assert resolved["selection_weighting"] in alpha_candidates(*_sizes(cell))
    assert rec.metrics["ssd_alpha"] == pytest.approx(resolved["selection_weighting"])


def _sizes(cell) -> tuple[int, int]:
    from unlearnkit.scenario import Scenario

    scn = Scenario(dataset=cell.dataset, forget=cell.forget, seed=cell.seed, val_fraction=cell.val_fraction)
    return len(scn.retain) + len(scn.forget), len(scn.forget)


def test_the_defaults_trial_keeps_a_request_dependent_default(tmp_path):
    """ssd's α default (None: calibrated per request) lies outside its space: the first trial must run it as None,
    not draw a value, and a tuning won by the defaults writes no α into tuned.yaml."""
    cfg = parse_config({**TINY, "methods": ["ssd"]})
    res = tune(cfg, tmp_path / "out", settings=TuneSettings(trials=2, proxies=1, startup_trials=2), compare=False)
    first, second = ResultsStore(tmp_path / "out" / "results.db", readonly=True).trials()
    assert first["info"]["defaults"] and first["params"] == {"dampening_constant": 1.0}
    (proxy,) = first["info"]["proxies"]
    assert proxy["resolved"]["selection_weighting_paper"] == 10.0  # the calibrated α ran, and is stored
    assert set(second["params"]) == {"dampening_constant", "selection_weighting"}
    if first["value"] <= second["value"]:
        assert "selection_weighting" not in res.best["ssd"]


def test_tune_on_ray_runs_the_same_trials_as_in_process(tmp_path):
    """``--ray``: each trial's proxy runs are Ray tasks; the same draws give the same objective values as in-process
    (TPE's later draws depend on the measured time ratios, a constraint, so only the start-up draws must agree)."""
    ray = pytest.importorskip("ray")
    cfg = parse_config({**TINY, "cache_dir": str(tmp_path / "cache")})
    settings = {"trials": 3, "proxies": 1, "compare": False}
    local = uk.tune(cfg, tmp_path / "local", **settings)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        remote = uk.tune(cfg, tmp_path / "ray", ray=True, **settings)
    finally:
        ray.shutdown()
    assert remote.ran == local.ran == {"finetune": 3}

    def trials(out: Path) -> list[tuple[dict, float, list]]:
        rows = ResultsStore(out / "results.db", readonly=True).trials()
        return [(t["params"], t["value"], [(p["forget"], p["seed"]) for p in t["info"]["proxies"]]) for t in rows]

    on_ray, here = trials(tmp_path / "ray"), trials(tmp_path / "local")
    assert on_ray[:2] == here[:2]  # the defaults and the first random draw: same params, same objective
    assert [t[2] for t in on_ray] == [t[2] for t in here]  # the same proxy requests
    assert all(0.0 <= t[1] <= 1.0 for t in on_ray)
