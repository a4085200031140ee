"""Resources: extra models a metric needs, declared by name and built once per key.

A metric declares what it needs (``register_metric(..., needs={"shadow_bank"})``) and reads it with
``ctx.resource("shadow_bank")``. This module holds the other side: a registry of resources (name ->
builder function + the inputs its key depends on) and :class:`ResourceBuilder`, which builds each resource
at most once per key and hands it to the metric through the
:class:`~unlearnkit.metrics.EvalContext`.

* **Inputs.** Everything a builder may read is one :class:`ResourceInputs`: the scenario, the audited
  architecture (a registered model name or a zero-argument ``nn.Module`` factory) and training recipe, the
  method under audit, and the resource settings (``lira_shadows``, ``ensemble_n``, ...).
* **Keys.** A resource's key is the hash of the inputs it declares in ``depends_on`` (e.g. a shadow bank
  depends on the scenario, architecture, recipe, seed and number of shadows, not on the method; the
  unlearned ensemble also on the method and its hyperparameters), computed by :func:`resource_key`.
* **Caching.** In memory, per process, in a :class:`ResourceMemo` (a few values per resource; the runner
  keeps one per cache directory so every row of a scenario shares its shadow bank); on disk, trained members go through
  the existing :class:`~unlearnkit.engine.ModelCache` and :class:`~unlearnkit.engine.EnsembleCache`.
  A model factory that is not a registered name has no stable identity, so its resources stay in memory.
* **Not computable.** A builder (or its ``check``) raises
  :class:`~unlearnkit.metrics.MetricUnavailable` with the reason (``lira_shadows = 0``, a class request
  for the ε score, a failed training); the builder remembers the reason for the key and every metric
  needing the resource becomes ``not computed: <reason>``. Bad input raises
  :class:`~unlearnkit.errors.UnlearnkitError`.
* **Parts.** A resource made of independent models (the shadow bank) may declare ``parts`` and
  ``build_part``, so an executor can train each part as its own task first (the Ray backend does).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearnkit._registry import Registry
from unlearnkit.engine import EnsembleCache, ModelCache, TrainConfig, config_hash, resolve_device
from unlearnkit.errors import UnlearnkitError
from unlearnkit.metrics import MetricUnavailable
from unlearnkit.models import MODELS, create_model
from unlearnkit.scenario import Scenario

#: a registered model name, or a zero-argument factory of fresh (untrained) models
ModelFactory = str | Callable[[], nn.Module]

#: the fields of :class:`ResourceInputs` a resource's key may depend on
KEY_FIELDS = (
    "scenario", "model", "train", "seed", "method", "params", "shots", "original", "unlearned_models",
    "lira_shadows", "lira_nonmember_split", "ensemble_n", "ensemble_originals", "evaluated", "relearn",
    "concept_data", "generation",
)  # fmt: skip


@dataclass
class ResourceInputs:
    """What resource builders may read.

    Attributes:
        scenario: the scenario (D, D_f, D_r and the held-out splits).
        model: the audited architecture: a registered name or a zero-argument ``nn.Module`` factory.
        model_kwargs: passed to the registered model's factory.
        train: the recipe the original model was trained with (shadows and ensembles use it).
        seed: seeds every resource (default: the scenario's).
        device: where to train and evaluate.
        method: the method under audit (``"original"``/``"retrain"``/``"audit"`` rows too; ``None``: none).
        params: its hyperparameters (as recorded; ``shots`` is dropped).
        shots: forget images of a setting-2 run (``None``: full forget set).
        original: the model before unlearning (the start of every unlearning run of the ε score).
        unlearned_models: given unlearned models (N runs of one algorithm), or a zero-argument loader of them.
        unlearned_models_id: identity of the given models for the key (e.g. their SHA-256s).
        lira_shadows, lira_nonmember_split: LiRA's shadow bank (0 = off).
        ensemble_n, ensemble_originals, ensemble_batch_models, ensemble_mode: the ε score's ensembles (0 = off).
        on_epoch: progress callback of every training.
        evaluated: the model under evaluation (what a relearning attack fine-tunes a copy of).
        evaluated_id: its identity for the key (the runner: the row's run key; ``None``: the object itself).
        relearn: the relearning attack's settings (see :class:`~unlearnkit.protocols.relearn.RelearnSettings`;
            ``{}``: the defaults, ``{"enabled": False}``: off).
        concept_data: a setting-3 row's :class:`~unlearnkit.concept.ConceptData` (then ``scenario`` is ``None``
            and ``seed`` must be given); keyed by its spec and fingerprint.
        generation: the setting-3 generation analogue's settings (``{}``: off; see
            :mod:`unlearnkit.concept.downstream`).
    """

    scenario: Scenario | None
    model: ModelFactory | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig | None = None
    seed: int | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    shots: int | None = None
    original: nn.Module | None = None
    unlearned_models: Sequence[nn.Module] | Callable[[], Sequence[nn.Module]] | None = None
    unlearned_models_id: str | None = None
    lira_shadows: int = 0
    lira_nonmember_split: str = "auto"
    ensemble_n: int = 0
    ensemble_originals: str = "shared"
    ensemble_batch_models: int = 16
    ensemble_mode: str = "auto"
    on_epoch: Callable[[int, int, float], None] | None = None
    evaluated: nn.Module | None = None
    evaluated_id: str | None = None
    relearn: dict[str, Any] = field(default_factory=dict)
    concept_data: Any = None
    generation: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scenario is None and (self.concept_data is None or self.seed is None):
            raise UnlearnkitError("resource inputs need a scenario, or concept data and a seed (setting 3)")
        self.seed = self.scenario.seed if self.seed is None else int(self.seed)  # type: ignore[union-attr]
        self.device = resolve_device(self.device)
        self.params = {k: v for k, v in self.params.items() if k != "shots"}
        if self.train is not None and not isinstance(self.train, TrainConfig):
            raise UnlearnkitError(f"train_config must be a TrainConfig, got {type(self.train).__name__}")
        if isinstance(self.model, str):
            MODELS.get(self.model)  # unknown names raise
        elif self.model is not None and not callable(self.model):
            raise UnlearnkitError(
                f"model_factory must be a registered model name or a callable returning an nn.Module, "
                f"got {type(self.model).__name__}"
            )

    @property
    def model_name(self) -> str:
        """The registered name, or ``<factory qualified name>`` for a callable."""
        if isinstance(self.model, str):
            return self.model
        return f"<factory {getattr(self.model, '__qualname__', type(self.model).__name__)}>"

    @property
    def named_model(self) -> bool:
        """Whether the architecture is a registered name (then trained models may be cached on disk)."""
        return isinstance(self.model, str)

    def make_model(self) -> nn.Module:
        """A fresh model of the audited architecture."""
        if self.model is None:
            raise MetricUnavailable("needs a model factory (a registered model name or a callable)")
        if isinstance(self.model, str):
            b = self.scenario.bundle
            return create_model(self.model, b.num_classes, b.in_shape, **self.model_kwargs)
        net = self.model()
        if not isinstance(net, nn.Module):
            raise UnlearnkitError(f"model_factory must return an nn.Module, got {type(net).__name__}")
        return net

    def require_recipe(self, what: str) -> TrainConfig:
        """The training recipe, or :class:`MetricUnavailable` naming ``what`` needs it and the factory."""
        if self.model is None or self.train is None:
            raise MetricUnavailable(
                f"{what} need a model factory and a training recipe (model_factory=, train_config=)"
            )
        return self.train


def _key_value(inputs: ResourceInputs, name: str, keep: list[Any]) -> Any:
    """JSON-able identity of one input field (objects without one are kept alive and named by ``id``)."""
    v = getattr(inputs, name)
    if name == "scenario":
        return None if v is None else {"spec": v.spec(), "splits": v.splits_hash()}
    if name == "concept_data":
        return None if v is None else {"spec": v.spec, "fingerprint": v.fingerprint()}
    if name == "model":
        if isinstance(v, str) or v is None:
            return {"name": v, "kwargs": inputs.model_kwargs}
        keep.append(v)
        return {"factory": id(v)}
    if name == "train":
        return None if v is None else v.to_dict()
    if name == "concept":
        return None if v is None else {"name": v.name, "spec": v.spec, "train": v.fingerprint()}
    if name == "unlearned_models":
        if v is None or inputs.unlearned_models_id is not None:
            return inputs.unlearned_models_id
        keep.append(v)
        return {"given": id(v)}
    if name == "evaluated" and inputs.evaluated_id is not None:
        return inputs.evaluated_id
    if name in ("original", "evaluated"):
        if v is None:
            return None
        keep.append(v)
        return {"object": id(v)}
    return v


def resource_key(resource: Resource, inputs: ResourceInputs) -> tuple[str, list[Any]]:
    """The in-memory key of ``resource`` for ``inputs`` (the hash of the fields it depends on).

    Returns the key and the objects it names by ``id`` (held with the cached value, so no other object
    can take their ``id`` while the entry lives).
    """
    keep: list[Any] = []
    fields = resource.depends_on(inputs) if callable(resource.depends_on) else resource.depends_on
    _check_fields(resource.name, fields)
    ident = {f: _key_value(inputs, f, keep) for f in fields}
    return config_hash({"resource": resource.name, **ident}), keep


@dataclass(frozen=True)
class Resource:
    """A registered resource.

    Attributes:
        name: what metrics put in their ``needs``.
        build: ``build(builder) -> value``; raises :class:`MetricUnavailable` when it cannot be built.
        depends_on: the :class:`ResourceInputs` fields its key is made of (or a function of the inputs giving
            them, when what matters depends on the inputs: e.g. given models replace the method).
        check: ``check(builder) -> reason | None``, run on every request before the key is looked up (for
            reasons that depend on inputs outside the key, e.g. the method of the row).
        parts: ``parts(builder) -> int``, independent pieces an executor may build ahead as separate tasks.
        build_part: ``build_part(builder, i)``: build piece ``i`` into the disk cache.
        max_kept: how many values (keys) of this resource a :class:`ResourceMemo` holds at once (a shadow
            bank holds a copy of the training set; an unlearned ensemble keeps its original model alive).
        description: one line for ``list``.
    """

    name: str
    build: Callable[[ResourceBuilder], Any]
    depends_on: tuple[str, ...] | Callable[[ResourceInputs], tuple[str, ...]]
    check: Callable[[ResourceBuilder], str | None] | None = None
    parts: Callable[[ResourceBuilder], int] | None = None
    build_part: Callable[[ResourceBuilder, int], None] | None = None
    max_kept: int = 4
    description: str = ""


RESOURCES: Registry[Resource] = Registry("resource")


def register_resource(
    name: str,
    *,
    depends_on: Iterable[str] | Callable[[ResourceInputs], tuple[str, ...]],
    check: Callable[[ResourceBuilder], str | None] | None = None,
    parts: Callable[[ResourceBuilder], int] | None = None,
    build_part: Callable[[ResourceBuilder, int], None] | None = None,
    max_kept: int = 4,
    description: str = "",
) -> Callable[[Callable[[ResourceBuilder], Any]], Callable[[ResourceBuilder], Any]]:
    """Decorator registering ``build(builder) -> value`` as resource ``name`` keyed by ``depends_on``."""
    deps = depends_on if callable(depends_on) else tuple(depends_on)
    if not callable(deps):
        _check_fields(name, deps)

    def deco(fn: Callable[[ResourceBuilder], Any]) -> Callable[[ResourceBuilder], Any]:
        doc = description or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        RESOURCES.add(name, Resource(name, fn, deps, check, parts, build_part, max_kept, doc))
        return fn

    return deco


def _check_fields(name: str, fields: Iterable[str]) -> None:
    unknown = sorted(set(fields) - set(KEY_FIELDS))
    if unknown:
        raise ValueError(f"resource {name!r} depends on unknown inputs {unknown}; expected some of {KEY_FIELDS}")


def list_resources(pattern: str = "*") -> list[str]:
    """Registered resource names matching ``pattern``."""
    return RESOURCES.list(pattern)


@dataclass(frozen=True)
class _Unavailable:
    reason: str


class ResourceMemo:
    """Built resources by key, in memory; per resource, least recently used first out (``Resource.max_kept``)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[str, Any, list[Any]]] = OrderedDict()
        self.built = 0

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> Any:
        """The value stored under ``key`` (marked as used now)."""
        self._entries.move_to_end(key)
        return self._entries[key][1]

    def put(self, resource: Resource, key: str, value: Any, keep: list[Any]) -> None:
        """Store ``value`` (and the objects its key names by ``id``), dropping the resource's oldest beyond its cap."""
        self._entries[key] = (resource.name, value, keep)
        self._entries.move_to_end(key)
        mine = [k for k, e in self._entries.items() if e[0] == resource.name]
        for k in mine[: max(0, len(mine) - resource.max_kept)]:
            del self._entries[k]


class ResourceBuilder:
    """Builds the resources of one evaluation, each once per key; what metrics call ``ctx.resource`` on.

    Args:
        inputs: what the builders read.
        cache_dir: root of the disk caches (``models/`` and ``ensembles/`` below it; ``None``: the default
            ``$UNLEARNKIT_CACHE``). Only used for registered model names.
        memo: the in-memory cache (pass one object to share resources across evaluations).
        ensemble_cache: the ε score's member cache (default: one under ``cache_dir``); pass the same
            object across evaluations to share the per-member figures.
        disk: whether trained models go to the disk caches at all.
    """

    def __init__(
        self,
        inputs: ResourceInputs,
        *,
        cache_dir: str | Path | None = None,
        memo: ResourceMemo | None = None,
        ensemble_cache: EnsembleCache | None = None,
        disk: bool = True,
    ) -> None:
        self.inputs = inputs
        self.memo = memo if memo is not None else ResourceMemo()
        self.disk = disk and (inputs.named_model or inputs.concept_data is not None)
        root = Path(cache_dir) if cache_dir is not None else None
        self.model_cache: ModelCache | None = ModelCache(root / "models" if root else None) if self.disk else None
        if ensemble_cache is None:
            ensemble_cache = EnsembleCache(root / "ensembles" if root else None)
        self.ensemble_cache = ensemble_cache

    def key(self, name: str) -> str:
        """The key of resource ``name`` for these inputs."""
        return resource_key(RESOURCES.get(name), self.inputs)[0]

    def get(self, name: str) -> Any:
        """The resource ``name``, built on first request; raises :class:`MetricUnavailable` with the reason.

        Raises:
            UnlearnkitError: unknown resource name, or bad input found while building.
        """
        res = RESOURCES.get(name)
        if res.check is not None:
            reason = res.check(self)
            if reason is not None:
                raise MetricUnavailable(reason)
        key, keep = resource_key(res, self.inputs)
        if key not in self.memo:
            try:
                value: Any = res.build(self)
            except MetricUnavailable as e:
                value = _Unavailable(str(e))
            self.memo.put(res, key, value, keep)
            self.memo.built += 1
        value = self.memo.get(key)
        if isinstance(value, _Unavailable):
            raise MetricUnavailable(value.reason)
        return value

    def parts(self, name: str) -> int:
        """How many independent parts ``name`` has that :meth:`build_part` can build ahead (0: none)."""
        res = RESOURCES.get(name)
        return 0 if res.parts is None else res.parts(self)

    def build_part(self, name: str, i: int) -> None:
        """Build part ``i`` of ``name`` into the disk cache (an executor's task); errors propagate."""
        res = RESOURCES.get(name)
        if res.build_part is None:
            raise UnlearnkitError(f"resource {name!r} has no parts to build ahead")
        res.build_part(self, i)
