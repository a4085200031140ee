"""Train-once cache for the original and retrained models, keyed by a hash of their config.

Ten methods on one (scenario, model, seed) share one original and one retrained model; a rerun loads
them instead of training. Entries are ``<root>/<hash>.safetensors`` + ``<hash>.json`` (the config and
what training measured, e.g. its wall time).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from unlearnkit.engine.checkpoint import config_hash, load_checkpoint, read_sidecar, save_checkpoint


def default_cache_dir() -> Path:
    """``$UNLEARNKIT_CACHE`` or ``~/.cache/unlearnkit``."""
    return Path(os.environ.get("UNLEARNKIT_CACHE", Path.home() / ".cache" / "unlearnkit"))


class ModelCache:
    """Directory of trained models keyed by config hash."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir() / "models"

    def path(self, key: dict[str, Any]) -> Path:
        """Where the model for ``key`` lives."""
        return self.root / f"{config_hash(key)}.safetensors"

    def __contains__(self, key: dict[str, Any]) -> bool:
        return self.path(key).is_file()

    def get_or_train(
        self,
        key: dict[str, Any],
        make_model: Callable[[], nn.Module],
        train: Callable[[nn.Module], dict[str, Any]],
    ) -> tuple[nn.Module, dict[str, Any], bool]:
        """Return ``(model, info, trained_now)``; ``train(model)`` runs only on a cache miss.

        ``info`` is what ``train`` returned (stored in the sidecar), e.g. ``{"time_s": 3.2}``.
        """
        p = self.path(key)
        model = make_model()
        if p.is_file():
            load_checkpoint(model, p)
            return model.eval(), read_sidecar(p).get("info", {}), False
        info = train(model)
        save_checkpoint(model, p, {"key": key, "info": info})
        return model.eval(), info, True
