"""Checkpoints: safetensors weights plus a JSON sidecar with the config. Loading never unpickles."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from unlearnkit.errors import UnlearnkitError


def config_hash(config: dict[str, Any], length: int = 16) -> str:
    """Stable short SHA-256 of a JSON-serialisable config (keys sorted)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sidecar_path(path: str | Path) -> Path:
    """``model.safetensors`` -> ``model.json``."""
    return Path(path).with_suffix(".json")


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state dict to ``path`` (safetensors, atomically), without a sidecar."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise UnlearnkitError(f"checkpoint path must end in .safetensors, got {path}")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    _atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt", "writer": "unlearnkit"}))
    return path


def write_sidecar(path: str | Path, config: dict[str, Any], *, strict: bool = False) -> Path:
    """Write ``config`` as the JSON sidecar of checkpoint ``path`` (atomically); ``strict``: no NaN, no
    stringified objects."""
    if strict:
        side = json.dumps(config, indent=2, sort_keys=True, allow_nan=False)
    else:
        side = json.dumps(config, indent=2, sort_keys=True, default=str)
    out = sidecar_path(path)
    _atomic_write(out, lambda tmp: Path(tmp).write_text(side))
    return out


def save_checkpoint(model: nn.Module, path: str | Path, config: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s state dict to ``path`` (safetensors) and ``config`` to the JSON sidecar."""
    path = save_weights(model, path)
    write_sidecar(path, config or {})
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file into a state dict; anything else is refused (never unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise UnlearnkitError(f"checkpoint not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UnlearnkitError(f"{path} is not a safetensors checkpoint ({e})") from None


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` strictly; a checkpoint that does not fit the model raises."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]!r})")
        if bad:
            k = bad[0]
            parts.append(f"shape mismatch for {k!r}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        raise UnlearnkitError(f"checkpoint {path} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of a checkpoint ({} if there is none)."""
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise UnlearnkitError(f"checkpoint sidecar {side} is not valid JSON: {e}") from None
