"""Contract tests generated from the method registry (sklearn ``parametrize_with_checks`` style).

Every registered method is run through every ``check_*`` function below, so a newly registered method
is covered without new test code. Select one with ``-k``, e.g. ``-k "finetune and mutate"``.

Each check runs on a tiny CPU problem (digits, ``class:3``, the conftest MLP) with the method's DEFAULT
hyperparameters. A known, accepted failure goes in :data:`EXPECTED_FAILURES` with its reason (it is
then a strict xfail: fixing it makes the suite say so).
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import unlearnkit as uk
from unlearnkit.engine import TrainConfig
from unlearnkit.errors import TrainingDivergedError, UnlearnkitError
from unlearnkit.methods import METHODS, Method, UnlearnData, create_method, list_methods
from unlearnkit.methods._base import Interval, Options, _Boolean, _NoneOk
from unlearnkit.scenario import KINDS, ForgetRequest

#: (method, check name) -> reason, for failures we knowingly accept (strict xfail)
EXPECTED_FAILURES: dict[tuple[str, str], str] = {}

#: a default-parameter run on the tiny problem must finish within this many seconds
TIME_BUDGET_S = 30.0

#: every resource a method may declare in ``needs``
ALL_NEEDS = ("forget", "retain", "val", "train_recipe")


# -- the tiny problem --------------------------------------------------------------------------------------


class _WorkDone(RuntimeError):
    """Raised by tripwires: the method started working before refusing its input."""


class _TripwireNet(nn.Module):
    """A digits-shaped MLP whose forward pass must never be reached."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise _WorkDone("the model's forward ran before the input was refused")


class _TripwireDataset(Dataset):
    """A split that must never be read."""

    def __len__(self) -> int:
        raise _WorkDone("a data split was read before the input was refused")

    def __getitem__(self, i: int) -> Any:
        raise _WorkDone("a data split was read before the input was refused")


def _tripwire_factory() -> nn.Module:
    raise _WorkDone("the model factory ran before the input was refused")


class _NaNNet(nn.Module):
    """Trainable, but every logit is NaN (wraps a model of the method's example architecture)."""

    def __init__(self, inner: nn.Module | None = None) -> None:
        super().__init__()
        self.inner = inner if inner is not None else _make_mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * float("nan")


def _make_mlp() -> nn.Module:
    return uk.create_model("mlp", 10, (1, 8, 8))


def _factory(model_name: str) -> Callable[[], nn.Module]:
    return lambda: uk.create_model(model_name, 10, (1, 8, 8))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: state_dict keys differ"
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, f"{what}: {k} changed shape/dtype"
        assert torch.equal(a[k], b[k]), f"{what}: tensor {k!r} differs"


@dataclass
class _Run:
    method: Method
    input_model: nn.Module
    before: dict[str, torch.Tensor]
    training_before: bool
    output: nn.Module
    wall_s: float
    elapsed_s: float | None


@dataclass
class Problem:
    """The tiny scenario and trained model every check uses; default-parameter runs are cached."""

    scenario: uk.Scenario
    model: nn.Module
    make_model: Callable[[], nn.Module] = _make_mlp
    _runs: dict[type, _Run] = field(default_factory=dict)

    def data(self, *, request: ForgetRequest | None = None, **override: Any) -> UnlearnData:
        """Full data for the scenario (all splits + a 1-epoch retrain recipe), with overrides."""
        d = UnlearnData.from_scenario(
            self.scenario, make_model=self.make_model, train_config=TrainConfig(epochs=1), device="cpu"
        )
        if request is not None:
            d.request = request
        for k, v in override.items():
            setattr(d, k, v)
        return d

    def tripwire_data(self, *, request: ForgetRequest | None = None, drop: str | None = None) -> UnlearnData:
        """Every resource present but booby-trapped (``drop`` is withheld): any work raises _WorkDone."""
        res: dict[str, Any] = {
            "_forget": _TripwireDataset(), "_retain": _TripwireDataset(), "_val": _TripwireDataset(),
            "make_model": _tripwire_factory, "train_config": TrainConfig(epochs=1),
        }  # fmt: skip
        if drop == "train_recipe":
            res["make_model"] = None
        elif drop is not None:
            res[f"_{drop}"] = None
        return UnlearnData(
            request=request or self.scenario.request,
            num_classes=10,
            in_shape=(1, 8, 8),
            forget_classes=self.scenario.forget_classes,
            **res,
        )

    def run(self, cls: type[Method], method: Method | None = None) -> _Run:
        """Unlearn a fresh copy of the trained model with ``method`` (default: ``cls()``)."""
        m = cls() if method is None else method
        model = copy.deepcopy(self.model)
        model.train(True)  # the output must come back in eval mode regardless
        before = _state(model)
        t0 = time.perf_counter()
        out = m.unlearn(model, self.data())
        wall = time.perf_counter() - t0
        return _Run(m, model, before, model.training, out, wall, getattr(m, "elapsed_s_", None))

    def default_run(self, cls: type[Method]) -> _Run:
        if cls not in self._runs:
            self._runs[cls] = self.run(cls)
        return self._runs[cls]


class Problems:
    """One tiny problem per example architecture (``Method.example_model``), built on first use."""

    def __init__(self, scenario: uk.Scenario, trained_mlp: nn.Module) -> None:
        self.scenario = scenario
        self._by_model: dict[str, Problem] = {"mlp": Problem(scenario, copy.deepcopy(trained_mlp))}

    def for_method(self, cls: type[Method]) -> Problem:
        name = cls.example_model
        if name not in self._by_model:
            make = _factory(name)
            model = uk.train(make(), self.scenario, config=TrainConfig(epochs=3), device="cpu")
            self._by_model[name] = Problem(self.scenario, model, make_model=make)
        return self._by_model[name]


@pytest.fixture(scope="module")
def problems(digits_class_scenario, trained_mlp) -> Problems:
    return Problems(digits_class_scenario, trained_mlp)


# -- invalid values generated from the constraint objects ----------------------------------------------------


def _accepts(c: Any, v: Any) -> bool:
    """An oracle for the constraint types, written independently of their ``check`` methods."""
    if isinstance(c, Interval):
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)):
            return False
        if c.kind is int and not isinstance(v, Integral):
            return False
        low_ok = c.low is None or v > c.low or (v == c.low and c.closed in ("both", "left"))
        high_ok = c.high is None or v < c.high or (v == c.high and c.closed in ("both", "right"))
        return low_ok and high_ok
    if isinstance(c, Options):
        try:
            return v in c.values
        except TypeError:  # unhashable
            return False
    if isinstance(c, _Boolean):
        return isinstance(v, bool)
    if isinstance(c, _NoneOk):
        return v is None
    raise AssertionError(f"the contract tests do not know constraint type {type(c).__name__}; teach _accepts")


def _invalid_values(constraints: list[Any]) -> list[Any]:
    """Clearly invalid values for a parameter: rejected by every one of its constraints."""
    cands: list[Any] = ["nope", None, [1]]
    for c in constraints:
        if isinstance(c, Interval):
            cands += [float("nan"), float("inf"), True]
            if c.low is not None:
                cands.append(c.low - 1)
                if c.closed in ("right", "neither"):
                    cands.append(c.low)
            if c.high is not None:
                cands.append(c.high + 1)
                if c.closed in ("left", "neither"):
                    cands.append(c.high)
            if c.kind is int:
                cands.append((c.low or 0) + 0.5)
        elif isinstance(c, (_Boolean, Options)):
            cands += [2, "nope"]
    out, seen = [], set()
    for v in cands:
        if repr(v) not in seen and not any(_accepts(c, v) for c in constraints):
            seen.add(repr(v))
            out.append(v)
    return out


def test_invalid_value_generator_is_sound():
    """The generator yields values outside each constraint kind (and nothing a union accepts)."""
    pos = Interval(float, 0.0, None, "neither")
    vals = _invalid_values([pos])
    assert 0.0 in vals and -1.0 in vals and "nope" in vals and True in vals
    unit_or_none = _invalid_values([Interval(float, 0.0, 1.0, "both"), _NoneOk()])
    assert None not in unit_or_none and 2.0 in unit_or_none and -1.0 in unit_or_none
    assert 0.5 in _invalid_values([Interval(int, 0, None, "left")])
    assert "nope" in _invalid_values([Options(frozenset({"a"}))])


# -- the checks ------------------------------------------------------------------------------------------------


def check_default_constructible(cls: type[Method], problem: Problem) -> None:
    """``cls()`` works, stores exactly its hyperparameters (no logic in __init__), and its defaults validate."""
    m = cls()
    names = cls._get_param_names()
    assert set(vars(m)) == set(names), f"__init__ should only store hyperparameters, it set {sorted(vars(m))}"
    assert not [a for a in vars(m) if a.endswith("_")], "fitted (trailing underscore) attributes set in __init__"
    m.validate_params()
    assert set(cls._parameter_constraints) == set(names), (
        f"every hyperparameter needs a constraint: params {names}, constraints {sorted(cls._parameter_constraints)}"
    )
    assert cls.needs <= set(ALL_NEEDS), f"unknown needs {sorted(cls.needs - set(ALL_NEEDS))}"
    assert cls.requests and cls.requests <= set(KINDS), f"bad request kinds {sorted(cls.requests)}"
    assert cls.name and METHODS.get(cls.name) is cls


def check_init_keyword_only(cls: type[Method], problem: Problem) -> None:
    """Every hyperparameter is keyword-only with a default; a positional argument raises TypeError."""
    sig = inspect.signature(cls.__init__)
    for p in list(sig.parameters.values())[1:]:
        assert p.kind is p.KEYWORD_ONLY, f"{p.name} is not keyword-only"
        assert p.default is not p.empty, f"{p.name} has no default"
    first = next(iter(cls().get_params().values()), 1)
    with pytest.raises(TypeError):
        cls(first)


def check_get_params_round_trip(cls: type[Method], problem: Problem) -> None:
    """``create_method(name, **get_params())`` rebuilds the same method; values are stored verbatim."""
    m = cls()
    params = m.get_params()
    again = create_method(cls.name, **params)
    assert type(again) is cls and again.get_params() == params
    sentinels = {n: object() for n in params}
    stored = cls(**sentinels).get_params()
    for n, s in sentinels.items():
        assert stored[n] is s, f"{n!r} is not stored verbatim under its own name"
    text = repr(m)
    assert text.startswith(cls.__name__ + "(") and all(f"{n}=" in text for n in params)


def check_does_not_mutate_input(cls: type[Method], problem: Problem) -> None:
    """``unlearn`` leaves the input model's weights, buffers, grads and mode untouched."""
    r = problem.default_run(cls)
    _assert_same_state(r.before, _state(r.input_model), "the input model was mutated")
    assert r.input_model.training is r.training_before, "the input model's train/eval mode changed"
    assert all(p.grad is None for p in r.input_model.parameters()), "gradients were accumulated on the input"
    assert r.output is not r.input_model
    in_ptrs = {t.data_ptr() for t in r.input_model.state_dict().values()}
    assert not in_ptrs & {t.data_ptr() for t in r.output.state_dict().values()}, "output shares storage with input"


def check_output_like_input(cls: type[Method], problem: Problem) -> None:
    """The output has the input's state_dict keys, shapes and dtypes, finite weights, is in eval mode, predicts."""
    r = problem.default_run(cls)
    before, after = r.before, r.output.state_dict()
    if getattr(cls, "preserves_architecture", True):  # False: a wrapper (e.g. wfnet), other keys by design
        assert before.keys() == after.keys()
        for k in before:
            assert after[k].shape == before[k].shape and after[k].dtype == before[k].dtype, k
    for k in after:
        assert torch.isfinite(after[k].float()).all(), f"non-finite values in {k}"
    assert not r.output.training, "unlearn must return a model in eval mode"
    with torch.no_grad():
        logits = r.output(torch.rand(4, 1, 8, 8))
    assert logits.shape == (4, 10)


def check_same_seed_same_weights(cls: type[Method], problem: Problem) -> None:
    """Running again (same instance, same seed) gives bit-identical weights."""
    first = problem.default_run(cls)
    second = problem.run(cls, first.method)
    _assert_same_state(_state(first.output), _state(second.output), "same seed, different weights")


def check_records_diagnostics(cls: type[Method], problem: Problem) -> None:
    """``elapsed_s_`` is recorded, and the run fits the time budget on the tiny problem."""
    r = problem.default_run(cls)
    assert isinstance(r.elapsed_s, float) and 0 <= r.elapsed_s <= r.wall_s, "elapsed_s_ not recorded"
    assert r.wall_s < TIME_BUDGET_S, f"{cls.name} took {r.wall_s:.1f}s on the tiny problem"


def check_invalid_params_raise(cls: type[Method], problem: Problem) -> None:
    """Each clearly invalid value is refused by ``unlearn`` with an error naming the parameter, before any work."""
    tried = 0
    for pname, constraints in cls._parameter_constraints.items():
        for bad in _invalid_values(constraints):
            m = cls(**{pname: bad})  # no validation in __init__
            with pytest.raises(UnlearnkitError, match=f"'{pname}'") as exc:
                m.unlearn(_TripwireNet(), problem.tripwire_data())
            assert "must be" in str(exc.value), f"{pname}={bad!r}: the error should say what was expected"
            tried += 1
    assert tried >= len(cls._parameter_constraints)


def check_unknown_param_suggests(cls: type[Method], problem: Problem) -> None:
    """A misspelt hyperparameter is refused with a suggestion (by create_method, set_params and uk.unlearn)."""
    names = cls._get_param_names()
    with pytest.raises(UnlearnkitError, match="no hyperparameter 'zzz_unknown'"):
        create_method(cls.name, zzz_unknown=1)
    for n in names:
        typo = n + n[-1]
        with pytest.raises(UnlearnkitError, match=rf"did you mean [^)]*'{n}'"):
            create_method(cls.name, **{typo: 1})
        with pytest.raises(UnlearnkitError, match=rf"did you mean [^)]*'{n}'"):
            cls().set_params(**{typo: 1})
    typo = (names[0] + names[0][-1]) if names else "lrr"
    with pytest.raises(UnlearnkitError, match=f"'{typo}'"):
        uk.unlearn(cls.name, _TripwireNet(), problem.tripwire_data(), device="cpu", **{typo: 1})


def check_missing_needs_refused(cls: type[Method], problem: Problem) -> None:
    """Withholding any declared need makes ``unlearn`` refuse, naming it, before any work."""
    for need in sorted(cls.needs):
        data = problem.tripwire_data(drop=need)
        assert not data.has(need)
        fragment = "training recipe" if need == "train_recipe" else f"needs {need}"
        with pytest.raises(UnlearnkitError, match=fragment):
            cls().unlearn(_TripwireNet(), data)


def check_runs_with_only_declared_needs(cls: type[Method], problem: Problem) -> None:
    """``needs`` is complete: given nothing else (other splits withheld), the method still runs."""
    undeclared = {"_forget": None, "_retain": None, "_val": None, "make_model": None, "train_config": None}
    data = problem.data(**undeclared)
    full = problem.data()
    for need in cls.needs:
        if need == "train_recipe":
            data.make_model, data.train_config = full.make_model, full.train_config
        else:
            setattr(data, f"_{need}", getattr(full, f"_{need}"))
    out = cls().unlearn(copy.deepcopy(problem.model), data)
    if cls.preserves_architecture:
        assert out.state_dict().keys() == problem.model.state_dict().keys()
    else:
        assert isinstance(out, nn.Module)


def _request_of(kind: str) -> ForgetRequest:
    return {
        "random": ForgetRequest("random", fraction=0.1),
        "class": ForgetRequest("class", classes=(3,)),
        "subclass": ForgetRequest("subclass", subclass="baby"),
        "indices": ForgetRequest("indices", path="forget.txt"),
        "group": ForgetRequest("group", group=("colour", "red")),
    }[kind]


def check_request_kinds(cls: type[Method], problem: Problem) -> None:
    """Supported request kinds pass ``check_data``; unsupported ones (and multi-class, if declared) are refused."""
    for kind in KINDS:
        req = _request_of(kind)
        if kind in cls.requests:
            cls().check_data(problem.tripwire_data(request=req))
        else:
            with pytest.raises(UnlearnkitError, match=f"does not support {kind}"):
                cls().unlearn(_TripwireNet(), problem.tripwire_data(request=req))
    if "class" in cls.requests:
        multi = problem.tripwire_data(request=ForgetRequest("class", classes=(3, 7)))
        if cls.multi_class:
            cls().check_data(multi)
        else:
            with pytest.raises(UnlearnkitError, match="one class at a time"):
                cls().unlearn(_TripwireNet(), multi)


def check_nan_raises_diverged(cls: type[Method], problem: Problem) -> None:
    """A model with NaN logits makes the method raise TrainingDivergedError (not return garbage)."""
    data = problem.data(make_model=lambda: _NaNNet(problem.make_model()))
    with pytest.raises(TrainingDivergedError):
        cls().unlearn(_NaNNet(copy.deepcopy(problem.model)), data)


CHECKS: list[Callable[[type[Method], Problem], None]] = [
    check_default_constructible,
    check_init_keyword_only,
    check_get_params_round_trip,
    check_does_not_mutate_input,
    check_output_like_input,
    check_same_seed_same_weights,
    check_records_diagnostics,
    check_invalid_params_raise,
    check_unknown_param_suggests,
    check_missing_needs_refused,
    check_runs_with_only_declared_needs,
    check_request_kinds,
    check_nan_raises_diverged,
]


def _method_checks():
    for name in list_methods(modality="classifier"):  # the CLIP (setting-3) methods: test_concept_contract.py
        for check in CHECKS:
            reason = EXPECTED_FAILURES.get((name, check.__name__))
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            yield pytest.param(name, check, id=f"{name}-{check.__name__}", marks=marks)


@pytest.mark.parametrize(("name", "check"), list(_method_checks()))
def test_method_contract(name: str, check: Callable[[type[Method], Problem], None], problems: Problems) -> None:
    cls = METHODS.get(name)
    check(cls, problems.for_method(cls))


def test_registry_lists_the_baselines():
    assert {"finetune", "neggrad", "neggrad_plus", "random_labels", "retrain"} <= set(list_methods())
    assert list_methods("neggrad*") == sorted(n for n in list_methods() if n.startswith("neggrad"))
    with pytest.raises(UnlearnkitError, match="did you mean 'finetune'"):
        create_method("fintune")


# -- the checks themselves can fail: run them on deliberately broken methods (not registered) -------------------


class _Base(Method):
    name = "broken"
    needs = frozenset({"retain"})
    _parameter_constraints = {"lr": [Interval(float, 0.0, None, "neither")]}

    def __init__(self, *, lr: float = 0.1) -> None:
        self.lr = lr


class _MutatesInput(_Base):
    def unlearn(self, model: nn.Module, data: UnlearnData) -> nn.Module:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.5)
        return model.eval()


class _Nondeterministic(_Base):
    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        noise = np.random.default_rng().standard_normal  # unseeded on purpose
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.as_tensor(noise(tuple(p.shape)), dtype=p.dtype))
        return model


class _SkipsValidation(_Base):
    def unlearn(self, model: nn.Module, data: UnlearnData) -> nn.Module:
        model(torch.zeros(1, 1, 8, 8))
        return super().unlearn(model, data)


class _UnderDeclaresNeeds(_Base):
    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        len(data.forget)  # reads a split it did not declare
        return model


@pytest.mark.parametrize(
    ("broken", "check", "error"),
    [
        (_MutatesInput, check_does_not_mutate_input, AssertionError),
        (_Nondeterministic, check_same_seed_same_weights, AssertionError),
        (_SkipsValidation, check_invalid_params_raise, _WorkDone),
        (_UnderDeclaresNeeds, check_runs_with_only_declared_needs, UnlearnkitError),
    ],
    ids=["mutates_input", "nondeterministic", "skips_validation", "under_declares_needs"],
)
def test_checks_catch_broken_methods(broken, check, error, problems):
    problem = problems.for_method(broken)
    with pytest.raises(error):
        check(broken, problem)
