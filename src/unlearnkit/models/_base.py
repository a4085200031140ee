"""Model registry and factory: ``create_model(name, num_classes, in_shape)``.

Each entry is a function ``fn(num_classes, in_shape, **kwargs) -> nn.Module``; kwargs whose value is
``None`` are dropped before the call (the timm idiom), so generic options do not break models that do
not take them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from torch import nn

from unlearnkit._registry import Registry
from unlearnkit.errors import UnlearnkitError, suggest

ModelFn = Callable[..., nn.Module]
MODELS: Registry[ModelFn] = Registry("model")


def register_model(name: str) -> Callable[[ModelFn], ModelFn]:
    """Decorator registering a model constructor under ``name``."""
    return MODELS.register(name)


def create_model(name: str, num_classes: int, in_shape: Sequence[int], **kwargs: object) -> nn.Module:
    """Build the registered model ``name`` for ``num_classes`` outputs and inputs of ``in_shape``."""
    fn = MODELS.get(name)
    if int(num_classes) < 1:
        raise UnlearnkitError(f"num_classes must be >= 1, got {num_classes}")
    if not in_shape or any(int(s) < 1 for s in in_shape):
        raise UnlearnkitError(f"in_shape must be a non-empty tuple of positive sizes, got {tuple(in_shape)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = [n for n in params if n not in ("num_classes", "in_shape")]
        for k in kwargs:
            if k not in accepted:
                options = ", ".join(accepted) or "none"
                hint = suggest(k, accepted)
                raise UnlearnkitError(f"model {name!r} has no option {k!r}{hint}; its options: {options}")
    return fn(int(num_classes), tuple(int(s) for s in in_shape), **kwargs)


_FINGERPRINTS: dict[tuple, str] = {}


def model_fingerprint(name: str, num_classes: int, in_shape: Sequence[int], **kwargs: object) -> str:
    """Architecture fingerprint of a registered model: its name, constructor kwargs, ``num_classes`` and
    ``in_shape`` plus the structure of the module the constructor builds
    (:func:`~unlearnkit.engine.cache.module_fingerprint`), so a re-registered or edited user model gets
    another. Builds the model once per process and arguments, without touching the global RNG."""
    import json

    import torch

    from unlearnkit.engine.cache import architecture_fingerprint

    fn = MODELS.get(name)
    ident = (name, fn, int(num_classes), tuple(int(s) for s in in_shape),
             json.dumps(kwargs, sort_keys=True, default=str), str(torch.get_default_dtype()))  # fmt: skip
    if ident not in _FINGERPRINTS:
        with torch.random.fork_rng(devices=[]):
            model = create_model(name, num_classes, in_shape, **kwargs)
        _FINGERPRINTS[ident] = architecture_fingerprint(
            model, name=name, kwargs=kwargs, num_classes=int(num_classes), in_shape=list(ident[3])
        )
    return _FINGERPRINTS[ident]


def factory_fingerprint(
    model: str | Callable[[], nn.Module], num_classes: int, in_shape: Sequence[int], **kwargs: object
) -> str:
    """:func:`model_fingerprint` of a registered name, or the architecture fingerprint of what a user factory
    (a zero-argument callable) builds, so a different user ``nn.Module`` never shares a cache key."""
    if isinstance(model, str):
        return model_fingerprint(model, num_classes, in_shape, **kwargs)
    import torch

    from unlearnkit.engine.cache import architecture_fingerprint

    with torch.random.fork_rng(devices=[]):
        built = model()
    name = f"<factory {getattr(model, '__qualname__', type(model).__name__)}>"
    return architecture_fingerprint(built, name=name, kwargs=kwargs, num_classes=int(num_classes),
                                    in_shape=[int(s) for s in in_shape])  # fmt: skip


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching ``pattern``."""
    return MODELS.list(pattern)
