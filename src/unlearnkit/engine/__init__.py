"""Training, evaluation, seeding, devices, checkpoints and the train-once model cache."""

from __future__ import annotations

from unlearnkit.engine.cache import (
    CacheEntryWarning,
    ModelCache,
    architecture_fingerprint,
    compute_context,
    default_cache_dir,
    module_fingerprint,
)
from unlearnkit.engine.checkpoint import config_hash, load_checkpoint, read_state_dict, save_checkpoint
from unlearnkit.engine.device import resolve_device
from unlearnkit.engine.ensemble import EnsembleCache, train_ensemble
from unlearnkit.engine.loops import (
    TrainConfig,
    autocast,
    check_finite,
    cycle,
    iterate,
    labels_of,
    make_optimizer,
    predict_logits,
    train_model,
)
from unlearnkit.engine.seed import preserved_global_state, seed_everything

__all__ = [
    "CacheEntryWarning",
    "EnsembleCache",
    "ModelCache",
    "TrainConfig",
    "architecture_fingerprint",
    "autocast",
    "check_finite",
    "compute_context",
    "config_hash",
    "cycle",
    "default_cache_dir",
    "iterate",
    "labels_of",
    "load_checkpoint",
    "make_optimizer",
    "module_fingerprint",
    "predict_logits",
    "preserved_global_state",
    "read_state_dict",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "train_ensemble",
    "train_model",
]
