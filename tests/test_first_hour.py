"""A new user's first hour (issue 18): the API matches the CLI, your own data/model/method, a CLI without friction.

* the API's verbs use the CLI's thread default (1; ``threads=`` changes it, the caller's count is restored) and
  give the CLI's stored numbers for the same seed and threads; ``time_s`` is measured by the API too;
* the README's "Your own data / model / method" snippets run as written (``uk.benchmark`` with a ``from_torch``
  bundle and user modules, a method written from public imports only);
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import unlearnkit as uk
import unlearnkit.api as api
from unlearnkit.cli import app
from unlearnkit.engine import TrainConfig
from unlearnkit.errors import UnlearnkitError

runner = CliRunner()

#: non-timing metrics compared between the CLI's store and the API
COMPARED = ["acc_forget", "acc_retain", "acc_test", "acc_val", "js_divergence", "param_l2_to_retrain", "mia_efficacy"]


# -- 1. API = CLI -----------------------------------------------------------------------------------------------


def _threads_seen(monkeypatch) -> list[int]:
    seen: list[int] = []
    inner = api.train_model

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return inner(*args, **kwargs)

    monkeypatch.setattr(api, "train_model", spy)
    return seen


@pytest.mark.parametrize(("threads", "expected"), [(None, 1), (2, 2)])
def test_api_threads_default_to_the_clis_and_are_restored(monkeypatch, digits_class_scenario, threads, expected):
    seen = _threads_seen(monkeypatch)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        kwargs = {} if threads is None else {"threads": threads}
        uk.train("mlp", digits_class_scenario, config=TrainConfig(epochs=0), device="cpu", **kwargs)
        assert seen == [expected]
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_api_refuses_a_bad_thread_count(digits_class_scenario):
    with pytest.raises(UnlearnkitError, match="threads must be an integer"):
        uk.train("mlp", digits_class_scenario, config=TrainConfig(epochs=0), device="cpu", threads=-1)


def test_api_and_cli_store_the_same_numbers(tmp_path):
    """finetune on digits/mlp, 2 epochs, seed 0, one thread: the CLI's results.db equals uk.evaluate's values."""
    from unlearnkit.experiments import ResultsStore

    out = tmp_path / "out"
    metrics = "[" + ",".join([*COMPARED, "time_s", "time_ratio_vs_retrain"]) + "]"
    res = runner.invoke(app, ["run", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--methods", "finetune",
                              "--forget", "class:3", "--seeds", "0", "--device", "cpu", "--threads", "1", "--quiet",
                              "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "methods.finetune.epochs=1",
                              f"eval.metrics={metrics}"])  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = {r.method: r for r in ResultsStore(out / "results.db", readonly=True).records()}
    stored = rows["finetune"].metrics

    sc = uk.Scenario(dataset="digits", forget="class:3", seed=0)
    recipe = TrainConfig(epochs=2, lr=1e-3, batch_size=64, optimizer="adam", weight_decay=5e-4, scheduler="cosine")
    original = uk.train("mlp", sc, config=recipe, device="cpu", threads=1)
    retrained = uk.train("mlp", sc, on="retain", config=recipe, device="cpu", threads=1)
    unlearned = uk.unlearn("finetune", original, sc, device="cpu", threads=1, epochs=1)
    values = uk.evaluate(unlearned, sc, reference=retrained, original=original, device="cpu", threads=1,
                         metrics=[*COMPARED, "time_s", "time_ratio_vs_retrain"])  # fmt: skip
    assert {k: values[k] for k in COMPARED} == {k: stored[k] for k in COMPARED}
    assert isinstance(values["time_s"], float) and values["time_s"] > 0  # measured, not "not computed"
    assert values["time_s"] == api.elapsed_of(unlearned)
    assert values["time_ratio_vs_retrain"] == pytest.approx(values["time_s"] / api.elapsed_of(retrained))


# -- 2. your own data, model and method ---------------------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(section: str) -> str:
    """The first ```python block under the README heading ``## {section}``."""
    text = README.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", body, re.S)
    assert blocks, f"no python snippet under '## {section}'"
    return blocks[0]


@pytest.fixture
def registries():
    """Registries as they were before a snippet registered its model or method (other tests see no trace)."""
    from unlearnkit.methods import METHODS
    from unlearnkit.models import MODELS

    saved = {reg: dict(reg._entries) for reg in (METHODS, MODELS)}
    users = dict(api._USER_MODELS)
    yield
    for reg, entries in saved.items():
        reg._entries.clear()
        reg._entries.update(entries)
    api._USER_MODELS.clear()
    api._USER_MODELS.update(users)


@pytest.mark.parametrize("section", ["Your own data", "Your own model", "Your own method"])
def test_readme_snippet_runs(section, tmp_path, monkeypatch, registries):
    from unlearnkit.experiments import ResultsStore

    monkeypatch.chdir(tmp_path)
    code = _snippet(section)
    assert "._" not in code.replace("self._", "")  # public imports only (no unlearnkit.methods._base)
    exec(compile(code, f"README.md: {section}", "exec"), {"__name__": "__readme__"})
    (db,) = tmp_path.glob("runs/*/results.db")
    records = ResultsStore(db, readonly=True).records()
    assert records and all(r.status == "ok" for r in records), [r.error for r in records]
    assert (db.parent / "report.html").is_file()


def test_benchmark_takes_a_bundle_with_an_unknown_name_and_a_module_class(tmp_path, registries):
    from torch import nn
    from torch.utils.data import TensorDataset

    from unlearnkit.experiments import ResultsStore

    class Net(nn.Module):  # a user module built with no arguments
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(120, 1, 4, 4, generator=g), torch.arange(120) % 3
    bundle = uk.from_torch(TensorDataset(x[:90], y[:90]), TensorDataset(x[90:], y[90:]), name="not_registered")
    cfg = {"model": "my_net", "forget": ["class:1"], "methods": ["finetune"], "train": {"epochs": 1},
           "eval": {"metrics": ["acc_forget", "acc_test"]}}  # fmt: skip
    res = uk.benchmark(cfg, tmp_path / "out", bundle=bundle, models={"my_net": Net})
    assert res.failed == 0 and res.ran == 3  # original, retrain, finetune
    records = ResultsStore(tmp_path / "out" / "results.db", readonly=True).records()
    assert {r.scenario["dataset"] for r in records} == {"not_registered"}
    assert uk.benchmark(cfg, tmp_path / "out", bundle=bundle, models={"my_net": Net}).skipped == 3  # resumes
    with pytest.raises(UnlearnkitError, match="already registered"):
        uk.benchmark(cfg, tmp_path / "out2", bundle=bundle, models={"mlp": Net})
