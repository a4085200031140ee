"""Typed experiment configs (pydantic): YAML in, validated, unknown keys are errors.

A config describes a benchmark: one dataset and model, a list of forget requests, methods (with
hyperparameters), seeds and the training recipe of the original/retrained models::

    name: default
    dataset: digits
    model: small_cnn
    forget: ["class:3", "random:0.1"]
    methods: all            # or [retrain, finetune] or [{name: neggrad, params: {lr: 1e-4}}]
    seeds: [0]
    train: {epochs: 30, lr: 0.001, batch_size: 64}

Bounds (see :mod:`unlearnkit._config`): seeds in [0, 2**32); ``threads`` in [0, 256], with a warning above
the machine's core count; ``train.epochs`` >= 1; epochs and steps (``train.epochs`` and method
hyperparameters whose names end in ``epochs`` / ``steps``) below 10,000 / 1,000,000 unless
``allow_long: true``.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from unlearnkit._config import (
    Seeds,
    StrictModel,
    Threads,
    check_run_length,
    one_line,
    param_lengths,
    read_yaml,
    validate_model,
)
from unlearnkit.engine import TrainConfig
from unlearnkit.errors import ConfigError

#: old private names, kept for imports elsewhere
_Strict = StrictModel
_one_line = one_line


def load_concept_entries(*, required: bool = False) -> bool:
    """Import :mod:`unlearnkit.concept`, which registers the CLIP (setting-3) methods and metrics.

    Returns ``False`` when its optional dependency (transformers) is missing; with ``required``, that
    raises a one-line :class:`ConfigError` instead.
    """
    try:
        importlib.import_module("unlearnkit.concept")
    except ImportError as e:
        if required:
            raise ConfigError(
                f"setting 3 (CLIP) needs transformers and peft: pip install 'unlearnkit[clip]' ({e})"
            ) from None
        return False
    return True


class TrainSection(StrictModel):
    """Recipe for the original and retrained models (see :class:`unlearnkit.engine.TrainConfig`)."""

    #: at least 1 (0 would report untrained reference models); above MAX_EPOCHS needs ``allow_long``
    epochs: int = Field(30, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(5e-4, ge=0)
    momentum: float = Field(0.9, ge=0)
    scheduler: Literal["cosine", "none"] = "cosine"
    amp: bool = True

    def to_train_config(self) -> TrainConfig:
        """The engine's dataclass."""
        return TrainConfig(**self.model_dump())


#: RelearnSection fields added after the attacks first shipped, with their defaults (left out of run keys there)
_LATER_OPTIONS = {"forget_only": False, "retain_only": False, "extra_steps": 0, "setting2_shots": 10}


class RelearnSection(StrictModel):
    """The relearning attacks run on every classifier row (see :mod:`unlearnkit.protocols.relearn`).

    ``relearn: false`` (or ``enabled: false``) turns them off; ``lr`` / ``batch_size`` null: the training recipe's.
    """

    enabled: bool = True
    k: int = Field(10, ge=1)
    steps: int = Field(20, ge=1, le=100_000)
    seeds: int = Field(3, ge=1, le=100)
    lr: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)
    probe_retain: int = Field(500, ge=1)
    #: options (off by default): the attack with only the k forget images per batch, and with retain images only
    forget_only: bool = False
    retain_only: bool = False
    #: steps the attack goes on beyond the budget (the recovery curve only; after-attack values stay at ``steps``)
    extra_steps: int = Field(0, ge=0, le=100_000)
    #: setting-2 (no-retain) rows are attacked at this many forget images only
    setting2_shots: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _batch_holds_k(self) -> RelearnSection:
        if self.batch_size is not None and self.batch_size < self.k:
            raise ValueError(f"batch_size ({self.batch_size}) must be >= k ({self.k})")
        return self

    def for_cell(self) -> dict[str, Any] | None:
        """The settings a run records (``None`` when off: its run key stays what it was without attacks).

        The options added after the attacks existed are left out at their defaults, so a run's key stays what
        it was unless one is set.
        """
        if not self.enabled:
            return None
        d = self.model_dump()
        return {k: v for k, v in d.items() if k not in _LATER_OPTIONS or v != _LATER_OPTIONS[k]}


class MethodSpec(StrictModel):
    """A method and its hyperparameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class DataSection(StrictModel):
    """The data: which dataset, where it lives, and how the scenario splits it."""

    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    val_fraction: float = Field(0.1, ge=0, lt=0.5)
    #: external images for the setting-2 (no retain data) methods
    few_shot_folder: str | None = None


class ModelSection(StrictModel):
    """The architecture of the original and retrained models (a registered model and its options)."""

    name: str = "small_cnn"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class EvalSection(StrictModel):
    """What is measured: the metric selection and the resource-hungry metrics' budgets."""

    metrics: list[str] | None = None
    lira_shadows: int = Field(0, ge=0, le=10_000)  # LiRA / U-LiRA shadow models per scenario; 0 = off (>= 4 to compute)
    lira_fixed_variance: bool = True  # one global σ: the LiRA README advises it below ~64 shadows
    lira_nonmember_split: Literal["auto", "test", "val", "forget_test"] = "auto"
    #: U-LiRA's OUT side: shadows that never trained on x, "unlearned" on their own forget sets (the paper's
    #: game, default) or "untouched" (as trained). Part of the run key when LiRA is on.
    ulira_out: Literal["unlearned", "untouched"] = "unlearned"
    #: NeurIPS-2023 ε score: N unlearned vs N retrained models per scenario (forget_quality, final_score and
    #: their ceilings); 0 = off, else >= 2. Sample-level requests only. The GPU configs use 512.
    ensemble_n: int = Field(0, ge=0, le=10_000)
    ensemble_batch_models: int = Field(16, ge=1)  # members trained together in one batch
    #: how the ensembles are trained: "auto" (a fixed rule per model family and device, see
    #: unlearnkit.engine.ensemble.auto_path), "fused", "grouped", "vmap" or "loop". Part of the run key when the
    #: ε score is on; the path it resolved to is stored with each run (config.ensemble_path)
    ensemble_mode: Literal["auto", "fused", "grouped", "vmap", "loop"] = "auto"
    #: "shared": every unlearning run starts from the one original model (the published scorer);
    #: "per_seed": from N originals, one per run (N more trainings; not the published set-up)
    ensemble_originals: Literal["shared", "per_seed"] = "shared"
    #: relearning attacks (fine-tuning / RTT / linear probe) on every row; ``relearn: false`` turns them off
    relearn: RelearnSection = Field(default_factory=RelearnSection)

    @field_validator("relearn", mode="before")
    @classmethod
    def _relearn_switch(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else v

    @field_validator("ensemble_n")
    @classmethod
    def _ensemble_n(cls, v: int) -> int:
        if v == 1:
            raise ValueError("must be 0 (off) or >= 2: the ε score compares at least 2 models per side")
        return v


class RunSection(StrictModel):
    """Where and how the work runs (results do depend on ``threads``: it is in every run key)."""

    device: str = "auto"
    cache_dir: str | None = None
    #: torch intra-op threads on CPU (0: torch's default). One thread is as fast for the small offline models,
    #: avoids oversubscription on busy machines, and keeps float results independent of the core count.
    #: It is part of every run key (float results depend on it). Warned about above the machine's core count.
    threads: Threads = 1
    #: lift the ceilings on epochs and steps (train.epochs and method hyperparameters; see unlearnkit._config)
    allow_long: bool = False


#: the config's sections besides ``train``: name -> section class
SECTIONS: dict[str, type[StrictModel]] = {"data": DataSection, "model": ModelSection, "eval": EvalSection,
                                          "run": RunSection}  # fmt: skip
#: flat (pre-section) key -> (section, field): today's flat YAML files and ``KEY=VALUE`` overrides still use them
FLAT_KEYS: dict[str, tuple[str, str]] = {
    **{f: (sec, f) for sec in ("data", "eval", "run") for f in SECTIONS[sec].model_fields},
    "model": ("model", "name"), "model_kwargs": ("model", "kwargs"),
}  # fmt: skip


def _sectioned(data: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(data))
    for flat, (sec, name) in FLAT_KEYS.items():
        if flat not in out or (flat == "model" and isinstance(out["model"], Mapping)):
            continue  # absent, or ``model`` already a section
        value = out.pop(flat)
        section = out.setdefault(sec, {})
        if not isinstance(section, dict):
            raise ValueError(f"{sec}: expected a mapping (a section), got {type(section).__name__}")
        if name in section and section[name] != value:
            raise ValueError(f"{flat} is given twice, as {flat} and as {sec}.{name}")
        section[name] = value
    return out


def sectioned(data: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """A copy of a config mapping with every flat key moved into its section (``dataset`` -> ``data.dataset``,
    ``model: small_cnn`` -> ``model.name``). A field given both flat and in its section with different values
    is refused in one line."""
    try:
        return _sectioned(data)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def set_flat(data: dict[str, Any], flat: str, value: Any) -> None:
    """Set field ``flat`` (a flat name, e.g. ``dataset``, or a top-level key such as ``forget``) in a sectioned
    mapping, replacing any value there (command-line flags win over the file)."""
    if flat in FLAT_KEYS:
        sec, name = FLAT_KEYS[flat]
        section = data.setdefault(sec, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{sec}: expected a mapping (a section), got {type(section).__name__}")
        section[name] = value
    else:
        data[flat] = value


def flattened(data: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """The inverse of :func:`sectioned`: sections spread into flat keys (how sweeps expand their grid axes)."""
    out = sectioned(data, source)
    for sec in SECTIONS:
        section = out.pop(sec, None) or {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"{source}: {sec}: expected a mapping (a section), got {type(section).__name__}")
        for name, value in section.items():
            flat = next((f for f, target in FLAT_KEYS.items() if target == (sec, name)), None)
            if flat is None:
                raise ConfigError(f"{source}: {sec}.{name}: unknown key")
            out[flat] = value
    return out


class RunConfig(StrictModel):
    """A benchmark: dataset × model × forget requests × methods × seeds, in sections::

        name: default
        data: {dataset: digits, val_fraction: 0.1}
        model: {name: small_cnn, kwargs: {}}
        forget: ["class:3", "random:0.1"]
        methods: all
        seeds: [0]
        train: {epochs: 30, lr: 0.001}
        eval: {metrics: null, lira_shadows: 0, ensemble_n: 0}
        run: {device: auto, threads: 1}

    Flat files (``dataset: digits``, ``model: small_cnn``, ``threads: 1``, ...) are accepted as before, and every
    flat name is still an attribute (``cfg.dataset`` is ``cfg.data.dataset``; ``cfg.model_kwargs`` is
    ``cfg.model.kwargs``; the architecture's name is ``cfg.model.name``).
    """

    name: str = "default"
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    forget: list[str] = Field(default_factory=lambda: ["class:3", "random:0.1"], min_length=1)
    methods: Literal["all"] | list[str | MethodSpec] | dict[str, dict[str, Any]] = "all"
    seeds: Seeds = Field(default_factory=lambda: [0], min_length=1)
    #: forget images given to the setting-2 (no retain data) methods; one run per value
    shots: list[int] = Field(default_factory=lambda: [10], min_length=1)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    run: RunSection = Field(default_factory=RunSection)

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        return _sectioned(data) if isinstance(data, Mapping) else data

    @field_validator("forget", mode="before")
    @classmethod
    def _one_forget(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("shots")
    @classmethod
    def _positive_shots(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v) or len(set(v)) != len(v):
            raise ValueError("shots must be distinct positive integers (forget images given to no-retain methods)")
        return v

    @model_validator(mode="after")
    def _run_length(self) -> RunConfig:
        specs = self.method_specs() or []
        check_run_length([("train.epochs", self.train.epochs), *param_lengths((m.name, m.params) for m in specs)],
                         self.run.allow_long)  # fmt: skip
        return self

    def method_specs(self) -> list[MethodSpec] | None:
        """Explicit methods as specs, or ``None`` for ``all``."""
        if self.methods == "all":
            return None
        if isinstance(self.methods, dict):
            return [MethodSpec(name=k, params=v or {}) for k, v in self.methods.items()]
        return [m if isinstance(m, MethodSpec) else MethodSpec(name=m) for m in self.methods]

    def flat(self) -> dict[str, Any]:
        """The config as one flat mapping (the pre-section form; valid input to :func:`parse_config`)."""
        return flattened(self.model_dump())

    def replace(self, **flat: Any) -> RunConfig:
        """A copy with fields changed by flat name (``cfg.replace(device="cpu", methods=["retrain"])``), validated."""
        return parse_config({**self.flat(), **flat}, "options")


def _section_attribute(sec: str, name: str) -> property:
    return property(lambda self: getattr(getattr(self, sec), name), doc=f"``{sec}.{name}``")


for _flat, (_sec, _name) in FLAT_KEYS.items():  # cfg.dataset, cfg.threads, ... read their section's field
    if _flat != "model":
        setattr(RunConfig, _flat, _section_attribute(_sec, _name))


class RaySection(StrictModel):
    """Resources of the Ray tasks (each cell and each reference model is one task).

    Attributes:
        num_cpus: CPUs reserved per task; the task's torch uses this many threads.
        num_gpus: GPUs per task; a fraction (e.g. 0.25) packs several small tasks on one GPU.
        reference_num_cpus, reference_num_gpus: overrides for the reference-model (training) tasks.
        max_retries: how often Ray reruns a task whose worker died (a failed cell is not retried).
        connect_timeout_s: how long to wait for ``--ray-address`` to answer before giving up.
    """

    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    reference_num_cpus: float | None = Field(None, gt=0)
    reference_num_gpus: float | None = Field(None, ge=0)
    max_retries: int = Field(1, ge=0)
    connect_timeout_s: float = Field(10.0, gt=0)

    def task_resources(self, reference: bool) -> dict[str, float]:
        """``{"num_cpus", "num_gpus"}`` of a cell task or a reference task."""
        if reference:
            cpus = self.num_cpus if self.reference_num_cpus is None else self.reference_num_cpus
            gpus = self.num_gpus if self.reference_num_gpus is None else self.reference_num_gpus
            return {"num_cpus": cpus, "num_gpus": gpus}
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}


# -- setting 3: concept unlearning in CLIP ------------------------------------------------------------------


class WorldSection(StrictModel):
    """Sizes of the generated concept world (see :class:`~unlearnkit.concept.world.WorldConfig`)."""

    n_train: int = Field(1536, ge=1)
    n_val: int = Field(128, ge=0)
    n_test: int = Field(256, ge=2)
    image_size: int = Field(32, ge=16)
    noise: float = Field(0.06, ge=0, lt=1)
    #: how the unsafe image is made: its own render of the content ("independent") or v plus the marker
    twin: Literal["independent", "overlay"] = "independent"


class VisuSection(StrictModel):
    """ViSU files (JSON/JSONL) and image folders (see :func:`~unlearnkit.concept.visu.load_visu`)."""

    train: str
    test: str
    val: str | None = None
    coco_dir: str | None = None
    nsfw_dir: str | None = None
    coco_pattern: str = "{coco_id:012d}.jpg"
    max_train: int | None = Field(None, ge=1)
    max_val: int | None = Field(None, ge=1)
    max_test: int | None = Field(None, ge=2)


class ClipSection(StrictModel):
    """Either a small random-weight config (``config``, pretrained here) or ``from_pretrained`` weights."""

    config: str | None = None
    from_pretrained: str | None = None
    image_size: int = Field(32, ge=8)
    max_length: int = Field(77, ge=3)
    #: a hyperbolic (MERU/HySAC) checkpoint on ``from_pretrained``'s towers, as a safetensors file: the
    #: original of the hyperbolic methods (``hysac``); see :mod:`unlearnkit.concept.hysac_checkpoint`
    lorentz_checkpoint: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ClipSection:
        if (self.config is None) == (self.from_pretrained is None):
            raise ValueError("give exactly one of clip.config (a small config name) or clip.from_pretrained")
        if self.lorentz_checkpoint is not None and self.from_pretrained is None:
            raise ValueError("clip.lorentz_checkpoint needs clip.from_pretrained (the towers it was trained on)")
        return self

    @property
    def label(self) -> str:
        """The model name recorded with each run."""
        return self.config if self.config is not None else str(self.from_pretrained)


class PretrainSection(StrictModel):
    """Contrastive pretraining of a small CLIP on the training pairs (ignored for ``from_pretrained``)."""

    epochs: int = Field(30, ge=1)  # above MAX_EPOCHS needs allow_long
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(128, ge=2)
    weight_decay: float = Field(0.05, ge=0)
    #: epochs of the hyperbolic (MERU) original, if it needs another schedule than the Euclidean one
    #: (``None``: ``epochs``); only the MERU cells carry it, as their ``epochs``
    meru_epochs: int | None = Field(None, ge=1)


class ConceptRelearnSection(StrictModel):
    """The relearning attack on every setting-3 row (see :mod:`unlearnkit.concept.relearn`): the CLIP is
    fine-tuned on ``k`` unsafe training pairs for ``steps`` Adam steps with CLIP's loss, ``seeds`` times.

    ``relearn: false`` (or ``enabled: false``) turns it off; ``lr`` null: the pretraining lr of a small CLIP,
    1e-5 for ``from_pretrained`` weights.
    """

    enabled: bool = True
    k: int = Field(10, ge=2)
    steps: int = Field(10, ge=1, le=100_000)
    seeds: int = Field(3, ge=1, le=100)
    lr: float | None = Field(None, gt=0)

    def for_cell(self) -> dict[str, Any] | None:
        """The settings a run records (``None`` when off)."""
        return self.model_dump() if self.enabled else None


class GenerationSection(StrictModel):
    """The setting-3 generation analogue (see :mod:`unlearnkit.concept.downstream`): a generator, a captioner
    and a detector trained once per seed around the original CLIP, scored with each row's towers swapped in."""

    enabled: bool = True
    generator_epochs: int = Field(60, ge=1)
    captioner_epochs: int = Field(40, ge=1)
    detector_epochs: int = Field(10, ge=1)
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(128, ge=2)


class ConceptRunConfig(StrictModel):
    """A setting-3 benchmark: concept data × CLIP × methods × seeds (``setting: 3`` in the YAML)."""

    name: str = "setting3"
    setting: Literal[3]
    dataset: Literal["concept_world", "visu"] = "concept_world"
    world: WorldSection = Field(default_factory=WorldSection)
    visu: VisuSection | None = None
    clip: ClipSection = Field(default_factory=lambda: ClipSection(config="clip_small"))
    pretrain: PretrainSection = Field(default_factory=PretrainSection)
    #: the generation analogue's metrics (off when absent)
    generation: GenerationSection | None = None
    methods: Literal["all"] | list[str | MethodSpec] | dict[str, dict[str, Any] | None] = "all"
    seeds: Seeds = Field(default_factory=lambda: [0], min_length=1)
    metrics: list[str] | None = None
    device: str = "auto"
    cache_dir: str | None = None
    eval_batch_size: int = Field(256, ge=1)
    #: torch intra-op threads on CPU (0: torch's default), as in :class:`RunConfig`
    threads: Threads = 1
    #: export every unlearned CLIP (``save_pretrained`` + tokenizer) under ``OUT/models/<method>-<key>``
    save_models: bool = False
    #: lift the ceilings on epochs and steps (pretrain.epochs and method hyperparameters)
    allow_long: bool = False
    #: the relearning attack on every row (``relearn: false`` turns it off)
    relearn: ConceptRelearnSection = Field(default_factory=ConceptRelearnSection)

    @field_validator("relearn", mode="before")
    @classmethod
    def _relearn_switch(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _dataset_sources(self) -> ConceptRunConfig:
        if self.dataset == "visu" and self.visu is None:
            raise ValueError("dataset: visu needs a visu section (train, test, coco_dir, ...)")
        if self.dataset == "concept_world" and self.clip.from_pretrained is not None:
            raise ValueError("the concept world has its own word vocabulary: use a small clip.config with it")
        specs = [] if self.methods == "all" else self.method_specs()
        lengths = [("pretrain.epochs", self.pretrain.epochs), ("pretrain.meru_epochs", self.pretrain.meru_epochs or 0)]
        check_run_length([*lengths, *param_lengths((m.name, m.params) for m in specs)], self.allow_long)
        return self

    def method_specs(self) -> list[MethodSpec]:
        """Explicit methods as specs (``all``: every registered CLIP method with its defaults)."""
        if self.methods == "all":
            from unlearnkit.methods import list_methods

            load_concept_entries(required=True)
            return [MethodSpec(name=n) for n in list_methods(modality="clip")]
        if isinstance(self.methods, dict):
            return [MethodSpec(name=k, params=v or {}) for k, v in self.methods.items()]
        return [m if isinstance(m, MethodSpec) else MethodSpec(name=m) for m in self.methods]

    def replace(self, **changes: Any) -> ConceptRunConfig:
        """A copy with top-level fields changed (``cfg.replace(device="cpu")``), validated."""
        return validate_model(ConceptRunConfig, {**self.model_dump(), **changes}, "options")

    def concept_payload(self) -> dict[str, Any]:
        """The CLIP-specific sections as plain data (what a setting-3 run cell carries); ``generation`` only when on,
        so the run keys of configs without it stay what they were."""
        gen = {"generation": self.generation.model_dump()} if self.generation and self.generation.enabled else {}
        return {
            **gen,
            "world": self.world.model_dump() if self.dataset == "concept_world" else None,
            "visu": self.visu.model_dump() if self.visu is not None else None,
            # without a hyperbolic checkpoint the section stays what it was (run keys unchanged)
            "clip": self.clip.model_dump(
                exclude={"lorentz_checkpoint"} if self.clip.lorentz_checkpoint is None else None
            ),
            "pretrain": self.pretrain.model_dump(exclude={"meru_epochs"}) if self.clip.config is not None else None,
            "eval_batch_size": self.eval_batch_size,
            "save_models": self.save_models,
        }


#: every config kind :func:`load_config` returns (chosen by the ``setting:`` key)
AnyRunConfig = RunConfig | ConceptRunConfig


def parse_config(data: dict[str, Any] | None, source: str = "config") -> AnyRunConfig:
    """Validate a mapping into the config kind its ``setting:`` names: a :class:`ConceptRunConfig` for
    ``setting: 3``, else a :class:`RunConfig`; problems raise :class:`ConfigError` (one line)."""
    if isinstance(data, dict) and data.get("setting") == 3:
        return validate_model(ConceptRunConfig, data, source)
    return validate_model(RunConfig, data, source)


def parse_concept_config(data: dict[str, Any] | None, source: str = "config") -> ConceptRunConfig:
    """Validate a mapping into a :class:`ConceptRunConfig` (``setting: 3`` required); one-line :class:`ConfigError`."""
    return validate_model(ConceptRunConfig, data, source)


def load_config(path: str | Path) -> AnyRunConfig:
    """Read and validate a YAML config file: a :class:`RunConfig`, or a :class:`ConceptRunConfig` for ``setting: 3``."""
    return parse_config(read_yaml(path), str(Path(path)))
