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

#: old private names, kept for imports elsewhere
_Strict = StrictModel
_one_line = one_line


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

    @model_validator(mode="after")
    def _batch_holds_k(self) -> RelearnSection:
        if self.batch_size is not None and self.batch_size < self.k:
            raise ValueError(f"batch_size ({self.batch_size}) must be >= k ({self.k})")
        return self

    def for_cell(self) -> dict[str, Any] | None:
        """The settings a run records (``None`` when off: its run key stays what it was without attacks)."""
        return self.model_dump() if self.enabled else None


class MethodSpec(StrictModel):
    """A method and its hyperparameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class RunConfig(StrictModel):
    """A benchmark: dataset × model × forget requests × methods × seeds."""

    name: str = "default"
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    model: str = "small_cnn"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    forget: list[str] = Field(default_factory=lambda: ["class:3", "random:0.1"], min_length=1)
    methods: Literal["all"] | list[str | MethodSpec] | dict[str, dict[str, Any]] = "all"
    seeds: Seeds = Field(default_factory=lambda: [0], min_length=1)
    train: TrainSection = Field(default_factory=TrainSection)
    metrics: list[str] | None = None
    device: str = "auto"
    val_fraction: float = Field(0.1, ge=0, lt=0.5)
    shots: list[int] = Field(default_factory=lambda: [10], min_length=1)
    few_shot_folder: str | None = None
    cache_dir: str | None = None
    #: torch intra-op threads on CPU (0: torch's default). One thread is as fast for the small offline models,
    #: avoids oversubscription on busy machines, and keeps float results independent of the core count.
    #: It is part of every run key (float results depend on it). Warned about above the machine's core count.
    threads: Threads = 1
    #: lift the ceilings on epochs and steps (train.epochs and method hyperparameters; see unlearnkit._config)
    allow_long: bool = False
    lira_shadows: int = Field(0, ge=0, le=10_000)  # LiRA / U-LiRA shadow models per scenario; 0 = off (>= 4 to compute)
    lira_fixed_variance: bool = True  # one global σ: the LiRA README advises it below ~64 shadows
    lira_nonmember_split: Literal["auto", "test", "val", "forget_test"] = "auto"
    #: U-LiRA's OUT side: shadows that never trained on x, "unlearned" on their own forget sets (the paper's
    #: game, default) or "untouched" (as trained). Part of the run key when LiRA is on.
    ulira_out: Literal["unlearned", "untouched"] = "unlearned"
    #: NeurIPS-2023 ε score: N unlearned vs N retrained models per scenario (forget_quality, final_score and
    #: their ceilings); 0 = off, else >= 2. Sample-level requests only. The GPU configs use 512.
    ensemble_n: int = Field(0, ge=0, le=10_000)
    ensemble_batch_models: int = Field(16, ge=1)  # members trained together in one vmapped batch
    #: "shared": every unlearning run starts from the one original model (the published scorer);
    #: "per_seed": from N originals, one per run (N more trainings; not the published set-up)
    ensemble_originals: Literal["shared", "per_seed"] = "shared"
    #: relearning attacks (fine-tuning / RTT / linear probe) on every row; ``relearn: false`` turns them off
    relearn: RelearnSection = Field(default_factory=RelearnSection)

    @field_validator("relearn", mode="before")
    @classmethod
    def _relearn_switch(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else v

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

    @field_validator("ensemble_n")
    @classmethod
    def _ensemble_n(cls, v: int) -> int:
        if v == 1:
            raise ValueError("must be 0 (off) or >= 2: the ε score compares at least 2 models per side")
        return v

    @model_validator(mode="after")
    def _run_length(self) -> RunConfig:
        specs = self.method_specs() or []
        check_run_length([("train.epochs", self.train.epochs), *param_lengths((m.name, m.params) for m in specs)],
                         self.allow_long)  # fmt: skip
        return self

    def method_specs(self) -> list[MethodSpec] | None:
        """Explicit methods as specs, or ``None`` for ``all``."""
        if self.methods == "all":
            return None
        if isinstance(self.methods, dict):
            return [MethodSpec(name=k, params=v or {}) for k, v in self.methods.items()]
        return [m if isinstance(m, MethodSpec) else MethodSpec(name=m) for m in self.methods]


def parse_config(data: dict[str, Any] | None, source: str = "config") -> RunConfig:
    """Validate a mapping into a :class:`RunConfig`; problems raise :class:`ConfigError` (one line)."""
    return validate_model(RunConfig, data, source)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML config file."""
    return parse_config(read_yaml(path), str(Path(path)))
