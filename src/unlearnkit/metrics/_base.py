"""The metric contract: a pure function plus a registered wrapper that declares what it needs.

A metric wrapper is ``fn(ctx: EvalContext) -> float`` registered with :func:`register_metric`, which
records ``higher_is_better`` (``None`` when the goal is to *match* the retrained model, e.g. forget
accuracy on a random request) and ``needs``: splits such as ``"forget_test"``, models the caller hands in
(``"retrained"``, ``"original"``, ...), and built resources such as ``"shadow_bank"`` or
``"reference_ensemble"`` (extra models trained for the metric, see :mod:`unlearnkit.protocols`), which the
metric reads with ``ctx.resource(name)``. :func:`evaluate` computes every applicable metric; one that cannot
be computed (a missing split or model, a resource that cannot be built) yields a :class:`NotComputed`
carrying the reason, which reports print as ``not computed: <reason>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from unlearnkit._registry import Registry
from unlearnkit.engine import labels_of, predict_logits, preserved_global_state, resolve_device
from unlearnkit.errors import UnlearnkitError
from unlearnkit.scenario import SPLITS, Scenario

#: models and values a metric may need that the caller hands in (besides splits); any other need names a
#: built resource, provided through ``EvalContext.resources`` (see :mod:`unlearnkit.protocols`)
RESOURCES = ("retrained", "random_model", "original", "timing")


class ResourceProvider(Protocol):
    """What hands built resources to metrics (:class:`unlearnkit.protocols.ResourceBuilder`)."""

    def get(self, name: str) -> Any:
        """The resource ``name``, built once per key; raises :class:`MetricUnavailable` with the reason."""
        ...


@dataclass(frozen=True)
class NotComputed:
    """A metric value that could not be computed, with the reason."""

    reason: str

    def __str__(self) -> str:
        return f"not computed: {self.reason}"


MetricValue = float | NotComputed | dict[str, Any]

#: metric functions may return a JSON-able mapping (e.g. WF-Net's deletion curves), stored as is for report
#: sections; reports leave such values out of their tables
STRUCTURED_VALUES = True


#: the settings whose runs a metric of each modality scores
MODALITY_SETTINGS: dict[str, tuple[int, ...]] = {"classifier": (1, 2), "clip": (3,)}


@dataclass(frozen=True)
class Metric:
    """A registered metric: its function and metadata.

    ``modality`` is the kind of model it scores: ``"classifier"`` (settings 1 and 2, ``fn`` reads an
    :class:`EvalContext`) or ``"clip"`` (setting 3, ``fn`` reads the concept package's evaluation context).
    """

    name: str
    fn: Callable[[Any], float]
    higher_is_better: bool | None
    needs: frozenset[str]
    description: str
    modality: str = "classifier"

    @property
    def settings(self) -> tuple[int, ...]:
        """The settings whose runs this metric scores."""
        return MODALITY_SETTINGS[self.modality]


#: every metric of every setting (classifier metrics here; CLIP concept metrics register when
#: :mod:`unlearnkit.concept` is imported); filter with :func:`list_metrics` ``(setting=, modality=)``
METRICS: Registry[Metric] = Registry("metric")


def register_metric(
    name: str,
    *,
    higher_is_better: bool | None,
    needs: Iterable[str] = (),
    description: str = "",
    modality: str = "classifier",
) -> Callable[[Callable[[Any], float]], Callable[[Any], float]]:
    """Decorator registering ``fn(ctx) -> float`` as metric ``name`` of ``modality``."""
    needs = frozenset(needs)
    if modality not in MODALITY_SETTINGS:
        raise ValueError(f"metric {name!r}: unknown modality {modality!r}; known: {', '.join(MODALITY_SETTINGS)}")
    bad = sorted(n for n in needs if not isinstance(n, str) or not n.isidentifier())
    if bad:
        raise ValueError(f"metric {name!r} declares needs that are not names: {bad}")

    def deco(fn: Callable[[Any], float]) -> Callable[[Any], float]:
        doc = description or (fn.__doc__ or "").strip().splitlines()[0:1]
        text = doc if isinstance(doc, str) else "".join(doc)
        METRICS.add(name, Metric(name, fn, higher_is_better, needs, text, modality))
        return fn

    return deco


def list_metrics(pattern: str = "*", *, setting: int | None = None, modality: str | None = None) -> list[str]:
    """Registered metric names matching ``pattern``, optionally only those of one ``setting`` or ``modality``."""
    return [
        n for n in METRICS.list(pattern)
        if (setting is None or setting in METRICS.get(n).settings)
        and (modality is None or METRICS.get(n).modality == modality)
    ]  # fmt: skip


def select_metrics(names: Iterable[str] | None, modality: str, evaluator: str) -> list[Metric]:
    """The metrics called ``names`` (default: every ``modality`` metric); another modality's name raises.

    Args:
        names: metric names, or ``None`` for every registered metric of ``modality``.
        modality: the kind of model being scored.
        evaluator: how the messages name the function that scores it (e.g. ``"evaluate"``).
    """
    if names is None:
        return [METRICS.get(n) for n in list_metrics(modality=modality)]
    chosen = [METRICS.get(n) for n in names]  # unknown names raise with suggestions
    for m in chosen:
        if m.modality != modality:
            raise UnlearnkitError(
                f"metric {m.name!r} scores a {m.modality} model (setting {'/'.join(map(str, m.settings))}); "
                f"{evaluator} computes {modality} metrics only"
            )
    return chosen


@dataclass
class EvalContext:
    """Everything a metric may read, with logits computed once per (model, split) and cached.

    Attributes:
        model: the model under evaluation.
        scenario: its scenario (splits).
        retrained: the model retrained on D_r (the reference), if available.
        random_model: a randomly initialised model of the same architecture (ZRF's incompetent teacher).
        original: the model before unlearning, if available.
        timing: measured costs, e.g. ``{"time_s": .., "retrain_time_s": .., "peak_mem_mb": ..}``.
        resources: builds the resources metrics need (shadow models, reference ensembles); ``None``: none.
        options: metric settings, e.g. ``{"lira_fixed_variance": True}`` (read with :meth:`option`).
    """

    model: nn.Module
    scenario: Scenario
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    retrained: nn.Module | None = None
    random_model: nn.Module | None = None
    original: nn.Module | None = None
    timing: dict[str, float] = field(default_factory=dict)
    resources: ResourceProvider | None = None
    options: dict[str, Any] = field(default_factory=dict)
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)

    def resource(self, name: str) -> Any:
        """The built resource ``name`` (e.g. ``"shadow_bank"``); raises :class:`MetricUnavailable` with the reason."""
        if self.resources is None:
            raise MetricUnavailable(
                f"needs the {name.replace('_', ' ')}, which only a resource builder provides (unlearnkit.evaluate "
                "builds it from a model factory and a training recipe)"
            )
        return self.resources.get(name)

    def option(self, name: str, default: Any) -> Any:
        """The metric setting ``name`` (``default`` when not set)."""
        return self.options.get(name, default)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per evaluation (several metrics reading one attack share its result)."""
        k = ("memo", key)
        if k not in self._cache:
            self._cache[k] = compute()
        return self._cache[k]

    def _model(self, which: str) -> nn.Module:
        m = {"model": self.model, "retrained": self.retrained, "random_model": self.random_model,
             "original": self.original}[which]  # fmt: skip
        if m is None:
            raise MetricUnavailable(f"no {which.replace('_', ' ')} model was given")
        return m

    def logits(self, split: str, which: str = "model") -> torch.Tensor:
        """Logits ``[n, C]`` of ``which`` model (model/retrained/random_model/original) on ``split``."""
        key = (which, split)
        if key not in self._cache:
            ds = self.scenario.split(split)
            if ds is None:
                raise MetricUnavailable(f"the {self.scenario.request.kind} request has no {split} split")
            if len(ds) == 0:
                raise MetricUnavailable(f"the {split} split is empty")
            self._cache[key] = predict_logits(self._model(which), ds, device=self.device)
        return self._cache[key]

    def probs(self, split: str, which: str = "model") -> torch.Tensor:
        """Softmax probabilities ``[n, C]`` (float64)."""
        return torch.softmax(self.logits(split, which).double(), dim=1)

    def labels(self, split: str) -> torch.Tensor:
        """Labels of ``split``."""
        key = ("labels", split)
        if key not in self._cache:
            ds = self.scenario.split(split)
            if ds is None:
                raise MetricUnavailable(f"the {self.scenario.request.kind} request has no {split} split")
            self._cache[key] = labels_of(ds)
        return self._cache[key]


class MetricUnavailable(Exception):
    """Raised inside a metric when its inputs are missing; becomes :class:`NotComputed`."""


def needs_resources(metric: Metric) -> list[str]:
    """The built resources ``metric`` needs (its needs that are neither splits nor handed-in models)."""
    return sorted(metric.needs - set(SPLITS) - set(RESOURCES))


def _check_needs(metric: Metric, ctx: EvalContext) -> str | None:
    for need in sorted(metric.needs):
        if need in SPLITS and ctx.scenario.split_indices(need) is None:
            return f"the {ctx.scenario.request.kind} request has no {need} split"
        if need in ("retrained", "random_model", "original") and getattr(ctx, need) is None:
            return f"no {need.replace('_', ' ')} model"
    for need in needs_resources(metric):  # built on first use, once per key (the builder caches)
        try:
            ctx.resource(need)
        except MetricUnavailable as e:
            return str(e)
    return None


def evaluate_context(ctx: EvalContext, names: Iterable[str] | None = None) -> dict[str, MetricValue]:
    """Compute ``names`` (default: every registered classifier metric) on a prepared context.

    Metrics that need no built resource run first, then the others in registry order, so building
    resources (which trains and reseeds) never runs between two plain metrics.
    """
    chosen = [METRICS.get(n) for n in (list(names) if names is not None else list_metrics(modality="classifier"))]
    out: dict[str, MetricValue] = {}
    for m in sorted(chosen, key=lambda m: bool(needs_resources(m))):  # stable: given order within each group
        reason = _check_needs(m, ctx)
        if reason is not None:
            out[m.name] = NotComputed(reason)
            continue
        try:
            value = m.fn(ctx)
        except (MetricUnavailable, UnlearnkitError) as e:
            out[m.name] = NotComputed(str(e))
            continue
        if isinstance(value, Mapping):
            out[m.name] = dict(value)
        else:
            out[m.name] = float(value) if not isinstance(value, NotComputed) else value
    return {m.name: out[m.name] for m in chosen}


@preserved_global_state()  # leaves the caller's RNG states, flags and thread count as they were
def evaluate(
    model: nn.Module,
    scenario: Scenario,
    *,
    reference: nn.Module | None = None,
    random_model: nn.Module | None = None,
    original: nn.Module | None = None,
    metrics: Iterable[str] | None = None,
    timing: dict[str, float] | None = None,
    device: str | torch.device = "auto",
    resources: ResourceProvider | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, MetricValue]:
    """Compute ``metrics`` (default: every registered classifier metric) for ``model`` on ``scenario``.

    This is the metrics layer's entry point; :func:`unlearnkit.evaluate` wraps it and builds the resources
    (shadow models, reference ensembles) from a model factory and a training recipe.

    Args:
        model: the model to evaluate.
        scenario: the scenario whose splits are used.
        reference: the model retrained on D_r (needed by divergence metrics).
        random_model: randomly initialised model of the same architecture (ZRF).
        original: the model before unlearning.
        metrics: names to compute; unknown names, and CLIP (setting-3) metric names, raise.
        timing: measured costs (``time_s``, ``retrain_time_s``, ``peak_mem_mb``).
        device: where to run the forward passes.
        resources: builds the resources metrics need (``None``: those metrics are not computed).
        options: metric settings (e.g. ``lira_fixed_variance``).

    Returns:
        name -> float, or :class:`NotComputed` with the reason.
    """
    names = [m.name for m in select_metrics(metrics, "classifier", "evaluate")]  # refuses other modalities' names
    ctx = EvalContext(
        model=model, scenario=scenario, device=resolve_device(device), retrained=reference,
        random_model=random_model, original=original, timing=dict(timing or {}), resources=resources,
        options=dict(options or {}),
    )  # fmt: skip
    return evaluate_context(ctx, names)


def value_to_json(v: Any) -> Any:
    """float -> float; NotComputed -> ``"not computed: <reason>"`` (the stored and reported form)."""
    return str(v) if isinstance(v, NotComputed) else v


def is_not_computed(v: Any) -> bool:
    """True for a NotComputed or its stored string form."""
    return isinstance(v, NotComputed) or (isinstance(v, str) and v.startswith("not computed"))
