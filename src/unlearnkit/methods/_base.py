"""The method contract: hyperparameters in ``__init__``, one verb ``unlearn(model, data) -> model``.

Following scikit-learn's estimator rules:

* every hyperparameter is a keyword-only ``__init__`` argument with a default, stored verbatim under
  the same name, with no logic in ``__init__``;
* ``_parameter_constraints`` declares what each accepts; :meth:`Method.validate_params` checks them on
  entry to :meth:`Method.unlearn` (and the runner calls it before any training);
* ``unlearn`` deep-copies its input (it never mutates ``model``) and records diagnostics in trailing
  underscore attributes (``elapsed_s_``, ``history_``); a ``report_`` dict of name -> number (e.g.
  ``{"trainable_params": 1234}``) is added to the run's metrics by the runner.

Each method declares the data it needs (``needs``) and the forget requests it can serve
(``requests``, ``multi_class``); an unsuitable scenario fails before any work with a clear message.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, ClassVar, Self

import torch
from torch import nn
from torch.utils.data import Dataset

from unlearnkit._registry import Registry
from unlearnkit.engine import TrainConfig, seed_everything
from unlearnkit.errors import DataAccessError, UnlearnkitError, suggest
from unlearnkit.scenario import KINDS, ForgetRequest, Scenario

# -- parameter constraints (scikit-learn's _param_validation, reduced to what we need) ------------------


@dataclass(frozen=True)
class Interval:
    """A numeric range; ``kind`` is ``int`` or ``float`` (ints are accepted for floats)."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"  # "both" | "left" | "right" | "neither"

    def check(self, v: Any) -> bool:
        if isinstance(v, bool):
            return False
        if self.kind is int and not isinstance(v, Integral):
            return False
        if not isinstance(v, Real) or not math.isfinite(float(v)):
            return False
        lo_ok = self.low is None or (v >= self.low if self.closed in ("both", "left") else v > self.low)
        hi_ok = self.high is None or (v <= self.high if self.closed in ("both", "right") else v < self.high)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        lb = "[" if self.closed in ("both", "left") else "("
        rb = "]" if self.closed in ("both", "right") else ")"
        lo = "-inf" if self.low is None else self.low
        hi = "inf" if self.high is None else self.high
        return f"{self.kind.__name__} in {lb}{lo}, {hi}{rb}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: frozenset

    def check(self, v: Any) -> bool:
        try:
            return v in self.values
        except TypeError:  # unhashable values (lists, dicts) are never options
            return False

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(x) for x in sorted(self.values, key=str))


class _Boolean:
    def check(self, v: Any) -> bool:
        return isinstance(v, bool)

    def __str__(self) -> str:
        return "a boolean"


class _NoneOk:
    def check(self, v: Any) -> bool:
        return v is None

    def __str__(self) -> str:
        return "None"


BOOLEAN = _Boolean()
NONE = _NoneOk()
POSITIVE = Interval(float, 0.0, None, "neither")
NON_NEGATIVE = Interval(float, 0.0, None, "left")
POSITIVE_INT = Interval(int, 1, None, "left")
NON_NEGATIVE_INT = Interval(int, 0, None, "left")
UNIT = Interval(float, 0.0, 1.0, "both")
OPTIMIZER = Options(frozenset({"adam", "adamw", "sgd"}))


# -- search spaces (what `unlearnkit tune` explores; declared next to the constraints) -------------------


@dataclass(frozen=True)
class LogUniform:
    """A float drawn log-uniformly in ``[low, high]`` (learning rates, weights spanning decades)."""

    low: float
    high: float

    def bounds(self) -> list[Any]:
        """The extreme values a trial can take (checked against the parameter's constraints)."""
        return [float(self.low), float(self.high)]

    def suggest(self, trial: Any, name: str) -> float:
        """Draw the value from an Optuna trial."""
        return float(trial.suggest_float(name, self.low, self.high, log=True))

    def __str__(self) -> str:
        return f"log-uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly in ``[low, high]`` (mixing weights, fractions)."""

    low: float
    high: float

    def bounds(self) -> list[Any]:
        """The extreme values a trial can take."""
        return [float(self.low), float(self.high)]

    def suggest(self, trial: Any, name: str) -> float:
        """Draw the value from an Optuna trial."""
        return float(trial.suggest_float(name, self.low, self.high))

    def __str__(self) -> str:
        return f"uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class IntRange:
    """An integer in ``[low, high]`` (epochs, steps, layer counts)."""

    low: int
    high: int

    def bounds(self) -> list[Any]:
        """The extreme values a trial can take."""
        return [int(self.low), int(self.high)]

    def suggest(self, trial: Any, name: str) -> int:
        """Draw the value from an Optuna trial."""
        return int(trial.suggest_int(name, self.low, self.high))

    def __str__(self) -> str:
        return f"int [{self.low}, {self.high}]"


@dataclass(frozen=True)
class Choice:
    """One of a few values (losses, optimizers, variants)."""

    values: tuple[Any, ...]

    def bounds(self) -> list[Any]:
        """Every value a trial can take."""
        return list(self.values)

    def suggest(self, trial: Any, name: str) -> Any:
        """Draw the value from an Optuna trial."""
        return trial.suggest_categorical(name, list(self.values))

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


#: one dimension of a search space
Dimension = LogUniform | Uniform | IntRange | Choice


def search_space_problems(cls: type) -> list[str]:
    """What is wrong with ``cls.search_space``: a name that is no hyperparameter, a range outside the
    parameter's constraints, an empty or reversed range (empty list: nothing)."""
    space = getattr(cls, "search_space", None)
    if space is None:
        return [f"method {cls.name!r} declares no search_space"]
    problems = []
    names = cls._get_param_names()
    for pname, dim in space.items():
        if pname not in names:
            problems.append(f"method {cls.name!r}: search_space names {pname!r}, which is no hyperparameter"
                            f"{suggest(pname, names)} (its hyperparameters: {', '.join(names) or 'none'})")  # fmt: skip
            continue
        if not isinstance(dim, LogUniform | Uniform | IntRange | Choice):
            problems.append(f"method {cls.name!r}: search_space[{pname!r}] is a {type(dim).__name__}, not a dimension")
            continue
        if isinstance(dim, LogUniform | Uniform | IntRange) and not dim.low < dim.high:
            problems.append(f"method {cls.name!r}: search_space[{pname!r}] = {dim} is empty")
        if isinstance(dim, LogUniform) and dim.low <= 0:
            problems.append(f"method {cls.name!r}: search_space[{pname!r}] = {dim} must be positive (log scale)")
        if isinstance(dim, Choice) and not dim.values:
            problems.append(f"method {cls.name!r}: search_space[{pname!r}] has no values")
        constraints = cls._parameter_constraints.get(pname)
        for v in dim.bounds() if constraints else []:
            if not any(c.check(v) for c in constraints):
                expected = " or ".join(str(c) for c in constraints)
                problems.append(f"method {cls.name!r}: search_space[{pname!r}] = {dim} reaches {v!r}, but "
                                f"{pname!r} must be {expected}")  # fmt: skip
    return problems


# -- the data a method receives ------------------------------------------------------------------------


@dataclass
class UnlearnData:
    """What a method is given. Splits it is not given raise :class:`DataAccessError` when read.

    Build it from a scenario with :meth:`from_scenario`, or by hand (e.g. only ``forget`` for the
    no-retain setting).
    """

    request: ForgetRequest
    num_classes: int
    in_shape: tuple[int, ...]
    _forget: Dataset | None = None
    _retain: Dataset | None = None
    _val: Dataset | None = None
    forget_classes: tuple[int, ...] = ()
    make_model: Callable[[], nn.Module] | None = None
    train_config: TrainConfig | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    on_epoch: Callable[[int, int, float], None] | None = None

    @classmethod
    def from_scenario(
        cls,
        scenario: Scenario,
        *,
        provide: Sequence[str] = ("forget", "retain", "val"),
        make_model: Callable[[], nn.Module] | None = None,
        train_config: TrainConfig | None = None,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        on_epoch: Callable[[int, int, float], None] | None = None,
    ) -> UnlearnData:
        """The scenario's splits named in ``provide`` (others are withheld)."""
        from unlearnkit.engine import resolve_device

        return cls(
            request=scenario.request,
            num_classes=scenario.bundle.num_classes,
            in_shape=scenario.bundle.in_shape,
            _forget=scenario.forget if "forget" in provide else None,
            _retain=scenario.retain if "retain" in provide else None,
            _val=scenario.val if "val" in provide else None,
            forget_classes=scenario.forget_classes,
            make_model=make_model,
            train_config=train_config,
            device=resolve_device(device),
            seed=scenario.seed if seed is None else seed,
            on_epoch=on_epoch,
        )

    def has(self, name: str) -> bool:
        """Whether the split/resource ``name`` is available."""
        if name == "train_recipe":
            return self.make_model is not None and self.train_config is not None
        return getattr(self, f"_{name}", None) is not None

    def _get(self, name: str) -> Dataset:
        ds = getattr(self, f"_{name}")
        if ds is None:
            raise DataAccessError(f"the {name} set is not available to this method in this scenario")
        return ds

    @property
    def forget(self) -> Dataset:
        """D_f."""
        return self._get("forget")

    @property
    def retain(self) -> Dataset:
        """D_r (raises in a no-retain scenario)."""
        return self._get("retain")

    @property
    def val(self) -> Dataset:
        """Validation data."""
        return self._get("val")


# -- the base class --------------------------------------------------------------------------------------


class Hyperparameters:
    """scikit-learn's estimator rules, shared by :class:`Method` and the concept methods.

    Hyperparameters are the keyword-only arguments of ``__init__``, stored verbatim as attributes; they are
    checked against ``_parameter_constraints`` by :meth:`validate_params` on entry to ``unlearn``.
    """

    name: ClassVar[str] = ""
    #: the paper the method implements (authors, venue, year, arXiv id); shown by `unlearnkit list methods --cite`
    paper: ClassVar[str] = ""
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}
    #: the talk's setting: 1 = forget/retain data available, 2 = no retain data (few-shot), 3 = concept (CLIP)
    setting: ClassVar[int] = 1
    #: the kind of model the method unlearns: ``"classifier"`` (settings 1 and 2) or ``"clip"`` (setting 3)
    modality: ClassVar[str] = "classifier"
    #: data/resources required (recorded with each run so reports never consult the live registry)
    needs: ClassVar[frozenset[str]] = frozenset()
    #: forget-request kinds the method can serve
    requests: ClassVar[frozenset[str]] = frozenset()
    #: what `unlearnkit tune` explores: hyperparameter -> :class:`LogUniform` / :class:`Uniform` /
    #: :class:`IntRange` / :class:`Choice`, inside ``_parameter_constraints``; ``{}`` = nothing worth tuning,
    #: ``None`` = not declared yet (the contract test asks for one for every setting-1 method)
    search_space: ClassVar[dict[str, Any] | None] = None

    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        names = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            if p.kind is not p.KEYWORD_ONLY:
                raise TypeError(f"{cls.__name__}.__init__ must take keyword-only hyperparameters ({p.name})")
            names.append(p.name)
        return sorted(names)

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters as given (name -> value)."""
        return {n: getattr(self, n) for n in self._get_param_names()}

    def set_params(self, **params: Any) -> Self:
        """Set hyperparameters by name; unknown names raise."""
        valid = self._get_param_names()
        for k, v in params.items():
            if k not in valid:
                raise UnlearnkitError(_unknown_param_msg(self.name or type(self).__name__, k, valid))
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def validate_params(self) -> None:
        """Check every hyperparameter against ``_parameter_constraints``; raise naming the first bad one."""
        for pname, constraints in self._parameter_constraints.items():
            v = getattr(self, pname)
            if not any(c.check(v) for c in constraints):
                expected = " or ".join(str(c) for c in constraints)
                raise UnlearnkitError(f"method {self.name!r}: parameter {pname!r} must be {expected}, got {v!r}")

    def resolved_params(self, data: UnlearnData) -> dict[str, Any]:
        """Hyperparameters whose default depends on the request (e.g. ``ssd``'s α from |D|/|D_f|), as resolved
        for ``data``; the runner stores them with the run (``config.resolved_params``). Default: none."""
        return {}


class Method(Hyperparameters):
    """Base class of every unlearning method. Subclasses implement :meth:`_unlearn`."""

    #: data/resources required: "forget", "retain", "val", "train_recipe"
    needs: ClassVar[frozenset[str]] = frozenset({"forget", "retain"})
    #: forget-request kinds the method can serve
    requests: ClassVar[frozenset[str]] = frozenset(KINDS)
    #: whether ``class:a,b`` (several classes at once) is supported
    multi_class: ClassVar[bool] = True
    #: the registered model (built for digits, 1x8x8) that the contract tests train a tiny instance of
    example_model: ClassVar[str] = "mlp"
    #: False when ``unlearn`` returns a different module (a wrapper or an ensemble), not the input architecture
    preserves_architecture: ClassVar[bool] = True

    @classmethod
    def unsupported_reason(cls, request: ForgetRequest) -> str | None:
        """Why this method cannot serve ``request`` (``None`` if it can)."""
        if request.kind not in cls.requests:
            return (
                f"method {cls.name!r} does not support {request.kind} requests ({request}); "
                f"it supports: {', '.join(sorted(cls.requests))}"
            )
        if request.kind == "class" and len(request.classes) > 1 and not cls.multi_class:
            return f"method {cls.name!r} forgets one class at a time; got {request}"
        return None

    def check_model(self, model: nn.Module) -> None:
        """Refuse, before any training, an architecture this method cannot unlearn (default: any is fine).

        The runner calls it on a freshly built model of the configured architecture while planning.
        """

    def check_data(self, data: UnlearnData) -> None:
        """Refuse, before any work, a request or a data set-up this method cannot serve."""
        reason = self.unsupported_reason(data.request)
        if reason is not None:
            raise UnlearnkitError(reason)
        for need in sorted(self.needs):
            if not data.has(need):
                what = "a model factory and training recipe" if need == "train_recipe" else f"{need} data"
                raise UnlearnkitError(f"method {self.name!r} needs {what}, which this scenario does not provide")

    def unlearn(self, model: nn.Module, data: UnlearnData) -> nn.Module:
        """Return an unlearned copy of ``model`` (``model`` itself is left untouched)."""
        self.validate_params()
        self.check_data(data)
        generator = seed_everything(data.seed)
        work = copy.deepcopy(model).to(data.device)
        t0 = time.perf_counter()
        out = self._unlearn(work, data, generator)
        self.elapsed_s_ = time.perf_counter() - t0
        return out.eval()

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        raise NotImplementedError


def _unknown_param_msg(method: str, key: str, valid: list[str]) -> str:
    return (
        f"method {method!r} has no hyperparameter {key!r}{suggest(key, valid)}; "
        f"its hyperparameters: {', '.join(valid) or 'none'}"
    )


#: every method of every setting (classifier methods here; CLIP concept methods register when
#: :mod:`unlearnkit.concept` is imported); filter with :func:`list_methods` ``(setting=, modality=)``
METHODS: Registry[type[Any]] = Registry("method")


def register_in(registry: Registry[Any], name: str) -> Callable[[type], type]:
    """Class decorator registering a method class (any class with ``_get_param_names``) in ``registry``."""

    def deco(cls: type) -> type:
        cls.name = name
        cls._get_param_names()  # fail at import if the signature breaks the contract
        return registry.register(name)(cls)

    return deco


def instantiate(registry: Registry[Any], name: str, **params: Any) -> Any:
    """Instantiate the method class ``name`` of ``registry`` with ``params`` (unknown names raise)."""
    cls = registry.get(name)
    valid = cls._get_param_names()
    for k in params:
        if k not in valid:
            raise UnlearnkitError(_unknown_param_msg(name, k, valid))
    return cls(**params)


def register_method(name: str) -> Callable[[type[Any]], type[Any]]:
    """Class decorator: register a method class (a :class:`Method`, or a concept method) under ``name``."""
    return register_in(METHODS, name)


def create_method(name: str, **params: Any) -> Any:
    """Instantiate the registered method ``name`` (any setting) with ``params`` (unknown names raise)."""
    return instantiate(METHODS, name, **params)


def list_methods(pattern: str = "*", *, setting: int | None = None, modality: str | None = None) -> list[str]:
    """Registered method names matching ``pattern``, optionally only those of one ``setting`` or ``modality``."""
    return [
        n for n in METHODS.list(pattern)
        if (setting is None or METHODS.get(n).setting == setting)
        and (modality is None or METHODS.get(n).modality == modality)
    ]  # fmt: skip


def check_method_modality(name: str, modality: str) -> type[Any]:
    """The registered method class ``name``; one that unlearns another kind of model raises in one line."""
    cls = METHODS.get(name)
    if cls.modality != modality:
        own = ", ".join(list_methods(modality=modality)) or "none"
        where = (
            "a setting-3 config (setting: 3, e.g. unlearnkit run --config benchmarks/setting3_concept_world.yaml)"
            if cls.modality == "clip"
            else "a setting-1/2 (classifier) config"
        )
        raise UnlearnkitError(
            f"method {name!r} unlearns a {cls.modality} model (setting {cls.setting}), not a {modality} model: "
            f"name it in {where}; the {modality} methods: {own}"
        )
    return cls
