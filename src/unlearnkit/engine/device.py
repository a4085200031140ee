"""Device selection: ``auto`` picks CUDA, then MPS, then CPU."""

from __future__ import annotations

import torch

from unlearnkit.errors import UnlearnkitError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda[:i]``/``mps`` into a ``torch.device``; unavailable ones raise."""
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in DEVICES:
        raise UnlearnkitError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if base == "cuda" and not torch.cuda.is_available():
        raise UnlearnkitError("device 'cuda' was requested but CUDA is not available on this machine")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UnlearnkitError("device 'mps' was requested but MPS is not available on this machine")
    return torch.device(name)
