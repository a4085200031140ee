"""Training, evaluation, seeding, devices, checkpoints and the train-once model cache."""

from __future__ import annotations

from unlearnkit.engine.cache import ModelCache, default_cache_dir
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
    "EnsembleCache",
    "ModelCache",
    "TrainConfig",
    "autocast",
    "check_finite",
    "config_hash",
    "cycle",
    "default_cache_dir",
    "iterate",
    "labels_of",
    "load_checkpoint",
    "make_optimizer",
    "predict_logits",
    "preserved_global_state",
    "read_state_dict",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "train_ensemble",
    "train_model",
]
