"""The metric contract: a pure function plus a registered wrapper that declares what it needs.

A metric wrapper is ``fn(ctx: EvalContext) -> float`` registered with :func:`register_metric`, which
records ``higher_is_better`` (``None`` when the goal is to *match* the retrained model, e.g. forget
accuracy on a random request) and ``needs`` (splits such as ``"forget_test"`` and resources such as
``"retrained"``). :func:`evaluate` computes every applicable metric; one that cannot be computed yields
a :class:`NotComputed` carrying the reason, which reports print as ``not computed: <reason>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from unlearnkit._registry import Registry
from unlearnkit.engine import labels_of, predict_logits, preserved_global_state, resolve_device
from unlearnkit.errors import UnlearnkitError
from unlearnkit.scenario import SPLITS, Scenario

#: resources a metric may need besides splits
RESOURCES = ("retrained", "random_model", "original", "timing")


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
    unknown = needs - set(SPLITS) - set(RESOURCES)
    if modality == "classifier" and unknown:
        raise ValueError(f"metric {name!r} declares unknown needs {sorted(unknown)}")

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
    """

    model: nn.Module
    scenario: Scenario
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    retrained: nn.Module | None = None
    random_model: nn.Module | None = None
    original: nn.Module | None = None
    timing: dict[str, float] = field(default_factory=dict)
    _cache: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)

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


def _check_needs(metric: Metric, ctx: EvalContext) -> str | None:
    for need in sorted(metric.needs):
        if need in SPLITS and ctx.scenario.split_indices(need) is None:
            return f"the {ctx.scenario.request.kind} request has no {need} split"
        if need in ("retrained", "random_model", "original") and getattr(ctx, need) is None:
            return f"no {need.replace('_', ' ')} model"
    return None


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
) -> dict[str, MetricValue]:
    """Compute ``metrics`` (default: every registered classifier metric) for ``model`` on ``scenario``.

    Args:
        model: the model to evaluate.
        scenario: the scenario whose splits are used.
        reference: the model retrained on D_r (needed by divergence metrics).
        random_model: randomly initialised model of the same architecture (ZRF).
        original: the model before unlearning.
        metrics: names to compute; unknown names, and CLIP (setting-3) metric names, raise.
        timing: measured costs (``time_s``, ``retrain_time_s``, ``peak_mem_mb``).
        device: where to run the forward passes.

    Returns:
        name -> float, or :class:`NotComputed` with the reason.
    """
    chosen = select_metrics(metrics, "classifier", "evaluate")
    ctx = EvalContext(
        model=model, scenario=scenario, device=resolve_device(device), retrained=reference,
        random_model=random_model, original=original, timing=dict(timing or {}),
    )  # fmt: skip
    out: dict[str, MetricValue] = {}
    for m in chosen:
        reason = _check_needs(m, ctx)
        if reason is not None:
            out[m.name] = NotComputed(reason)
            continue
        try:
            value = m.fn(ctx)
        except MetricUnavailable as e:
            out[m.name] = NotComputed(str(e))
            continue
        except UnlearnkitError as e:
            out[m.name] = NotComputed(str(e))
            continue
        if isinstance(value, Mapping):
            out[m.name] = dict(value)
        else:
            out[m.name] = float(value) if not isinstance(value, NotComputed) else value
    return out


def value_to_json(v: Any) -> Any:
    """float -> float; NotComputed -> ``"not computed: <reason>"`` (the stored and reported form)."""
    return str(v) if isinstance(v, NotComputed) else v


def is_not_computed(v: Any) -> bool:
    """True for a NotComputed or its stored string form."""
    return isinstance(v, NotComputed) or (isinstance(v, str) and v.startswith("not computed"))
