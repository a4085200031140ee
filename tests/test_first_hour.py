"""A new user's first hour (issue 18): the API matches the CLI, your own data/model/method, a CLI without friction.

* the API's verbs use the CLI's thread default (1; ``threads=`` changes it, the caller's count is restored) and
  give the CLI's stored numbers for the same seed and threads; ``time_s`` is measured by the API too;
* the README's "Your own data / model / method" snippets run as written (``uk.benchmark`` with a ``from_torch``
  bundle and user modules, a method written from public imports only);
* the CLI prints what the user typed as typed, refuses every incompatible choice before training (nothing written),
  says what to do (setting-3 config, valid kinds, closest hyperparameter, ``--download``, "is a file"), is readable
  at 80 columns, logs one line per finished run when stdout is not a terminal, and lists hyperparameters.
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


# -- 3. a CLI without friction ------------------------------------------------------------------------------------


def _cli(args: list[str], **env: str):
    return runner.invoke(app, args, env={"COLUMNS": "80", **env})


def _refused(tmp_path, args: list[str], expect: str) -> str:
    """``run ARGS`` exits 2 with ``expect`` in its one-line message, and writes nothing."""
    out = tmp_path / "out"
    res = _cli(["run", "--quiet", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *args])
    assert res.exit_code == 2, res.output
    assert expect in " ".join(res.output.split()), res.output
    assert not out.exists() and not (tmp_path / "cache").exists()
    return res.output


@pytest.mark.parametrize("spec", ["random:abc", "class:cat", "class:[b]x"])
def test_user_text_is_printed_as_typed(tmp_path, spec):
    out = _refused(tmp_path, ["--forget", spec], spec)
    assert "🔤" not in out and "🐱" not in out


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--methods", "lora_bounded", "--model", "small_cnn"], "adapts attention Q/K/V projections"),
        (["--methods", "eu_k", "--model", "mlp", "methods.eu_k.k=50"], "k = 50 but the model has"),
        (["--methods", "wfnet", "--model", "mlp", "methods.wfnet.layers=conv"], "has no conv layer to filter"),
    ],
)
def test_a_method_that_cannot_unlearn_the_model_is_refused_before_training(tmp_path, monkeypatch, args, expect):
    from unlearnkit.experiments import runner as run_mod

    def no_training(*args, **kwargs):
        raise AssertionError("a reference model was trained")

    monkeypatch.setattr(run_mod, "load_or_train_reference", no_training)
    _refused(tmp_path, args, expect)


def test_a_setting3_method_on_a_classifier_config_names_the_setting3_config(tmp_path):
    _refused(tmp_path, ["--methods", "safe_clip"], "name it in a setting-3 config")


def test_unknown_request_kind_lists_the_kinds(tmp_path):
    _refused(tmp_path, ["--forget", "foo:1"], "the kinds: random, class, subclass, indices, group")


@pytest.mark.parametrize("method", ["finetune", "scrub"])
def test_hyperparameter_typo_suggests_by_edit_distance(tmp_path, method):
    out = _refused(tmp_path, ["--methods", method, f"methods.{method}.lr_typo=1"], "did you mean 'lr'?")
    assert "lr_decay_epoch'?" not in out


def test_suggestions_are_by_edit_distance():
    from unlearnkit.errors import edit_distance, suggest

    assert edit_distance("zfr", "zrf") == 1 and edit_distance("lr_typo", "lr") == 5
    assert suggest("lr_typo", ["lr", "lr_decay_epoch", "epochs"]) == " (did you mean 'lr'?)"
    assert suggest("xyz", ["lr", "epochs"]) == ""


def test_download_failures_name_the_option(tmp_path):
    _refused(tmp_path, ["--dataset", "mnist"], "where --download")
    _refused(tmp_path, ["--dataset", "mnist", "--data-root", str(tmp_path / "none")], "pass --download")


def test_out_naming_a_file_says_is_a_file(tmp_path):
    blocker = tmp_path / "results.txt"
    blocker.write_text("x")
    res = _cli(["run", "--quiet", "--out", str(blocker), "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 2 and "is a file" in res.output, res.output
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("what", ["methods", "metrics", "datasets", "models"])
def test_list_is_readable_at_80_columns(what):
    import json

    import unlearnkit as uk

    res = _cli(["list", what])
    assert res.exit_code == 0, res.output
    assert all(len(line) <= 80 for line in res.output.splitlines()), res.output
    assert "…" not in res.output  # nothing cut
    names = {"methods": uk.list_methods, "metrics": uk.list_metrics, "datasets": uk.list_datasets,
             "models": uk.list_models}[what]()  # fmt: skip
    plain = _cli(["list", what, "--plain"]).output.splitlines()
    assert set(names) <= {line.split("\t")[0] for line in plain}
    assert set(names) <= {e["name"] for e in json.loads(_cli(["list", what, "--json"]).output)}


def test_list_methods_params_shows_defaults_and_constraints():
    res = _cli(["list", "methods", "--params"])
    assert res.exit_code == 0, res.output
    block = re.split(r"\n(?=\S)", res.output.split("\nneggrad (setting 1, classifier)\n", 1)[1], maxsplit=1)[0]
    assert "  lr = 0.0001  (float in (0.0, inf); tune: log-uniform [1e-05, 0.01])" in block
    assert "  stop_forget_acc = None  (float in [0.0, 1.0] or None)" in block
    assert _cli(["list", "metrics", "--params"]).exit_code == 2


def test_one_log_line_per_finished_run_when_stdout_is_not_a_terminal(tmp_path):
    res = _cli(["run", "--model", "mlp", "--epochs", "1", "--methods", "finetune", "--forget", "class:3",
                "--seeds", "0", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--out",
                str(tmp_path / "out"), "eval.metrics=[acc_forget]", "methods.finetune.epochs=1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("[")]
    assert [line.split(" (")[0] for line in lines] == [
        "[1/3] digits class:3 s0 original: ok", "[2/3] digits class:3 s0 retrain: ok",
        "[3/3] digits class:3 s0 finetune: ok",
    ]  # fmt: skip
    assert all(len(line) <= 80 for line in res.output.splitlines()), res.output  # the summary fits, too


def test_api_records_the_thread_count_it_used() -> None:
    """The verbs run with one torch thread by default (as the CLI) and record the count with the model."""
    import unlearnkit as uk

    sc = uk.Scenario(dataset="digits", forget="class:3", seed=0)
    net = uk.train("mlp", sc, config=uk.TrainConfig(epochs=1), device="cpu")
    assert uk.threads_of(net) == 1
    out = uk.unlearn("finetune", net, sc, device="cpu", threads=2, epochs=1)
    assert uk.threads_of(out) == 2 and uk.threads_of(net) == 1
    assert uk.threads_of(uk.create_model("mlp", 10, (1, 8, 8))) is None
