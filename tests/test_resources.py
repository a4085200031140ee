"""Resources: metrics declare the extra models they need; the builder makes each once per key.

Also: the Python API computes LiRA, U-LiRA and the ε score with the runner's values, a user factory works
where a model name does, the worked example of docs/adding_a_metric.md runs, and metrics/ stays pure.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest
import torch

import unlearnkit as uk
from unlearnkit.errors import UnlearnkitError
from unlearnkit.experiments import ResultsStore, parse_config, run_benchmark
from unlearnkit.metrics import (
    METRICS,
    EvalContext,
    MetricUnavailable,
    NotComputed,
    evaluate,
    list_metrics,
    register_metric,
)
from unlearnkit.metrics._base import RESOURCES as HANDED_IN
from unlearnkit.metrics.epsilon_score import KEYS as EPS_KEYS
from unlearnkit.metrics.shadow_attacks import LIRA_METRICS, ULIRA_METRICS
from unlearnkit.protocols import RESOURCES, ResourceBuilder, ResourceInputs, ResourceMemo, register_resource
from unlearnkit.scenario import SPLITS

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "unlearnkit"


@pytest.fixture
def registered():
    """Names registered by a test, removed afterwards (the registries are global)."""
    added: list[tuple[object, str]] = []
    before = {id(r): set(r) for r in (METRICS, RESOURCES)}
    yield added
    for reg in (METRICS, RESOURCES):
        for name in set(reg) - before[id(reg)]:
            reg._entries.pop(name)


# -- the registry and the builder ------------------------------------------------------------------------


def test_every_metric_need_is_a_split_a_handed_in_model_or_a_registered_resource():
    for name in list_metrics(modality="classifier"):  # CLIP metrics read the concept data (test_concept_contract)
        unknown = METRICS.get(name).needs - set(SPLITS) - set(HANDED_IN) - set(RESOURCES.list())
        assert not unknown, f"{name} needs unknown {sorted(unknown)}"


def test_no_placeholder_metrics_remain():
    """Every LiRA / ε figure declares the resource it reads (none is a function that always raises)."""
    for name in LIRA_METRICS + ULIRA_METRICS + EPS_KEYS:
        assert METRICS.get(name).needs & set(RESOURCES.list()), name


def test_resource_built_once_per_key_and_its_failure_remembered(digits_random_scenario, registered):
    calls: list[int] = []

    @register_resource("test_counter", depends_on=("scenario", "seed"))
    def _counter(b: ResourceBuilder) -> int:
        calls.append(b.inputs.seed)
        if b.inputs.seed == 7:
            raise MetricUnavailable("seed 7 is unlucky")
        return 10 * b.inputs.seed

    @register_metric("test_counted", higher_is_better=True, needs={"test_counter"})
    def _counted(ctx: EvalContext) -> float:
        return ctx.resource("test_counter") + 0.5

    @register_metric("test_counted_too", higher_is_better=True, needs={"test_counter"})
    def _counted_too(ctx: EvalContext) -> float:
        return ctx.resource("test_counter") + 0.25

    memo = ResourceMemo()

    def run(seed: int) -> dict:
        b = ResourceBuilder(ResourceInputs(digits_random_scenario, seed=seed), memo=memo)
        return evaluate(torch.nn.Identity(), digits_random_scenario, metrics=["test_counted", "test_counted_too"],
                        resources=b, device="cpu")  # fmt: skip

    assert run(1) == {"test_counted": 10.5, "test_counted_too": 10.25}
    assert run(1)["test_counted"] == 10.5  # same key: not rebuilt
    assert run(2)["test_counted"] == 20.5  # another seed: another key
    bad = run(7)
    assert bad == dict.fromkeys(("test_counted", "test_counted_too"), NotComputed("seed 7 is unlucky"))
    run(7)
    assert calls == [1, 2, 7]  # once per key, failures included


def test_memo_holds_at_most_max_kept_values_per_resource(digits_random_scenario, registered):
    calls: list[int] = []

    @register_resource("test_big", depends_on=("seed",), max_kept=1)
    def _big(b: ResourceBuilder) -> int:
        calls.append(b.inputs.seed)
        return b.inputs.seed

    memo = ResourceMemo()
    for seed in (1, 1, 2, 1):
        ResourceBuilder(ResourceInputs(digits_random_scenario, seed=seed), memo=memo).get("test_big")
    assert calls == [1, 2, 1]  # seed 2 evicted seed 1's value


def test_unknown_resource_and_bad_declarations_raise(digits_random_scenario, registered):
    @register_metric("test_needs_nothing_known", higher_is_better=None, needs={"no_such_resource"})
    def _m(ctx: EvalContext) -> float:
        return 0.0

    b = ResourceBuilder(ResourceInputs(digits_random_scenario))
    with pytest.raises(UnlearnkitError, match="no_such_resource"):
        evaluate(torch.nn.Identity(), digits_random_scenario, metrics=["test_needs_nothing_known"], resources=b)
    with pytest.raises(ValueError, match="unknown inputs"):
        register_resource("test_bad", depends_on=("scenario", "weather"))(lambda b: None)
    with pytest.raises(ValueError, match="not names"):
        register_metric("test_bad_needs", higher_is_better=None, needs={"two words"})


def test_resources_not_computable_say_why(digits_random_scenario, digits_class_scenario):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    names = ["lira_auc", "ulira_auc", "forget_quality", "ra_r"]
    out = uk.evaluate(model, digits_random_scenario, metrics=names, lira_shadows=4, ensemble_n=2, device="cpu")
    assert all(isinstance(v, NotComputed) and "model factory and a training recipe" in v.reason for v in out.values())
    cfg = uk.TrainConfig(epochs=1)
    out = uk.evaluate(model, digits_random_scenario, metrics=["lira_auc", "ulira_auc"], model_factory="mlp",
                      train_config=cfg, lira_shadows=2, device="cpu")  # fmt: skip
    assert all("too few shadow models" in str(v) for v in out.values()), out
    out = uk.evaluate(model, digits_class_scenario, metrics=["forget_quality", "ra_r"], model_factory="mlp",
                      train_config=cfg, ensemble_n=2, method="finetune", device="cpu")  # fmt: skip
    assert all("sample-level" in str(v) for v in out.values()), out
    out = uk.evaluate(model, digits_random_scenario, metrics=["forget_quality"], unlearned_models=[model],
                      model_factory="mlp", train_config=cfg, device="cpu")  # fmt: skip
    assert "1 model given" in str(out["forget_quality"])
    with pytest.raises(UnlearnkitError, match="ensemble_n = 3 but 2"):
        uk.evaluate(model, digits_random_scenario, unlearned_models=[model, model], ensemble_n=3)
    with pytest.raises(UnlearnkitError, match="no_such_method"):
        uk.evaluate(model, digits_random_scenario, method="no_such_method")
    with pytest.raises(UnlearnkitError, match="model_factory"):
        uk.evaluate(model, digits_random_scenario, model_factory=42)


# -- the Python API gives the runner's numbers ----------------------------------------------------------------

N = 3
SHADOWS = 4


@pytest.fixture(scope="module")
def runner_values(tmp_path_factory):
    """A tiny benchmark with LiRA and the ε score: stored metrics of the finetune row."""
    tmp = tmp_path_factory.mktemp("runner")
    cfg = parse_config({
        "dataset": "digits", "model": "mlp", "forget": "random:0.1", "methods": ["finetune"], "seeds": [0],
        "train": {"epochs": 2}, "ensemble_n": N, "lira_shadows": SHADOWS, "device": "cpu",
        "cache_dir": str(tmp / "cache"), "metrics": [*LIRA_METRICS, *ULIRA_METRICS, *EPS_KEYS],
    })  # fmt: skip
    threads = torch.get_num_threads()
    try:
        assert run_benchmark(cfg, tmp / "out").failed == 0
    finally:
        torch.set_num_threads(threads)
    runs = {r["method"]: r for r in ResultsStore(tmp / "out" / "results.db").runs()}
    return cfg, runs["finetune"]


def _api_values(cfg, params, factory, cache_dir):
    scenario = uk.Scenario(dataset="digits", forget="random:0.1", seed=0)
    recipe = cfg.train.to_train_config()
    original = uk.train("mlp", scenario, config=recipe, device="cpu")
    unlearned = uk.unlearn("finetune", original, scenario, device="cpu", **params)
    return uk.evaluate(
        unlearned, scenario, original=original, method="finetune", method_params=params, model_factory=factory,
        train_config=recipe, lira_shadows=SHADOWS, ensemble_n=N, metrics=[*LIRA_METRICS, *ULIRA_METRICS, *EPS_KEYS],
        device="cpu", cache_dir=cache_dir,
    )  # fmt: skip


def test_api_lira_ulira_and_epsilon_score_equal_the_runners(runner_values, tmp_path):
    cfg, row = runner_values
    got = _api_values(cfg, row["params"], "mlp", tmp_path / "api-cache")  # its own cache: trained again
    want = {k: row["metrics"][k] for k in got}
    assert all(isinstance(v, float) and math.isfinite(v) for v in want.values()), want
    assert got == want
    assert want["forget_quality_ceiling"] > 0 and want["ensemble_n"] == N  # a real score, not the N = 2 zero


def test_a_user_factory_works_where_a_model_name_does(runner_values, tmp_path):
    cfg, row = runner_values
    b = uk.Scenario(dataset="digits", forget="random:0.1", seed=0).bundle

    def factory() -> torch.nn.Module:
        return uk.create_model("mlp", b.num_classes, b.in_shape)

    got = _api_values(cfg, row["params"], factory, tmp_path / "unused")
    assert got == {k: row["metrics"][k] for k in got}
    assert not (tmp_path / "unused").exists()  # a callable has no stable disk key: nothing cached


# -- the documentation example runs ---------------------------------------------------------------------------


def test_adding_a_metric_doc_examples_run(registered, capsys):
    text = (ROOT / "docs" / "adding_a_metric.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3
    namespace: dict = {"__name__": "adding_a_metric_doc"}
    for code in blocks:
        exec(compile(code, "docs/adding_a_metric.md", "exec"), namespace)  # our own doc
    assert "ensemble_agreement" in METRICS and "retrained_twin" in RESOURCES
    assert METRICS.get("ensemble_agreement").needs == {"forget", "reference_ensemble"}
    ref = torch.tensor([[-1.0, 0.0, 1.0], [1.0, 1.0, 2.0]]).numpy()  # ranges [-1, 1], [0, 1], [1, 2]
    assert namespace["share_within"](torch.zeros(3).numpy(), ref) == pytest.approx(2 / 3)


# -- layering ---------------------------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
    return mods


@pytest.mark.parametrize(("package", "forbidden"), [
    ("metrics", ("unlearnkit.methods", "unlearnkit.protocols", "unlearnkit.experiments")),
    ("protocols", ("unlearnkit.experiments", "unlearnkit.api", "unlearnkit.reports", "unlearnkit.cli")),
])  # fmt: skip
def test_layers_do_not_reach_up(package, forbidden):
    for path in sorted((SRC / package).rglob("*.py")):
        bad = sorted(m for m in _imports(path) if m.startswith(forbidden))
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"
