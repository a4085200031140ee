"""Train-once cache for trained models (reference, ensemble, shadow, pretrained), keyed by a hash of their config.

Ten methods on one (scenario, model, seed) share one original and one retrained model; a rerun loads
them instead of training. Entries are ``<root>/<hash>.safetensors`` + ``<hash>.json``; the sidecar holds
the full key, the SHA-256 of the weights file and what training measured (e.g. its wall time).

**Keys.** A key says everything that determines the weights: callers put in the data fingerprint
(:meth:`~unlearnkit.data.DatasetBundle.fingerprint`), the architecture fingerprint
(:func:`architecture_fingerprint`), the recipe, the seed, the split indices and the compute context
(:func:`compute_context`: device type, CPU thread count, deterministic kernels, dtype, autocast).

**Verification.** Every load checks that the sidecar is a valid record whose key equals the requested one,
that the weights file has the recorded SHA-256, fits the model and holds only finite values. An entry that
fails any check is *quarantined*: both files are renamed to ``<name>.quarantined-<UTC time>``, a
:class:`CacheEntryWarning` names them, and the model is trained again. A damaged entry never stops a run.

**Locking.** Training and writing an entry happen under an advisory file lock (``<hash>.lock``, created
readable and writable by everyone so a shared cache directory works), so two processes that need the same
model train it once: the second waits, then loads what the first wrote.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

from unlearnkit.engine.checkpoint import config_hash, read_state_dict, save_weights, sidecar_path, write_sidecar
from unlearnkit.errors import TrainingDivergedError, UnlearnkitError

#: format marker written into every sidecar
FORMAT = 2
#: a training time below this is not a measurement (sidecars record at least this much)
MIN_TIME_S = 1e-3


class CacheEntryWarning(UserWarning):
    """A cache entry failed verification and was quarantined; the model is trained again."""


class _BadEntry(Exception):
    """Internal: why an entry failed verification."""


def default_cache_dir() -> Path:
    """``$UNLEARNKIT_CACHE`` or ``~/.cache/unlearnkit``."""
    return Path(os.environ.get("UNLEARNKIT_CACHE", Path.home() / ".cache" / "unlearnkit"))


# -- fingerprints and context ---------------------------------------------------------------------------------


def _normalise(key: dict[str, Any]) -> Any:
    """``key`` as it reads back from JSON (tuples become lists, unknown objects strings)."""
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def module_fingerprint(model: nn.Module) -> str:
    """Hash of a module's structure: its class tree (with each module's ``extra_repr``), the names, shapes
    and dtypes of its parameters and buffers, and the bytecode of ``forward`` for classes outside torch.

    Two modules with the same structure and the same code share it whatever their weights; a different
    layer, option, shape, dtype or user ``forward`` gives another.
    """
    h = hashlib.sha256()
    for name, mod in model.named_modules():
        cls = type(mod)
        h.update(f"M|{name}|{cls.__module__}.{cls.__qualname__}|{mod.extra_repr()}\n".encode())
        if not cls.__module__.startswith("torch."):
            code = getattr(getattr(cls, "forward", None), "__code__", None)
            if code is not None:
                h.update(code.co_code)
                h.update(repr(code.co_names).encode())
    for kind, items in (("P", model.named_parameters()), ("B", model.named_buffers())):
        for name, t in items:
            h.update(f"{kind}|{name}|{tuple(t.shape)}|{t.dtype}\n".encode())
    return h.hexdigest()[:32]


def architecture_fingerprint(model: nn.Module, **describe: Any) -> str:
    """Fingerprint of an architecture: ``describe`` (e.g. name, constructor kwargs, num_classes, in_shape)
    plus :func:`module_fingerprint` of an instance."""
    return config_hash({"describe": _normalise(describe), "module": module_fingerprint(model)}, length=32)


def compute_context(
    device: torch.device | str,
    *,
    threads: int,
    deterministic: bool,
    amp: bool,
    dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """What, besides data, architecture, recipe and seed, changes a trained model's weights.

    Args:
        device: where training runs (only its type counts: ``cpu``, ``cuda``, ``mps``).
        threads: torch intra-op threads used for training; kept for CPU training only (the summation
            order of CPU kernels depends on it).
        deterministic: whether deterministic kernels were requested.
        amp: whether the recipe asks for bfloat16 autocast; kept for CUDA only (ignored elsewhere).
        dtype: the default floating dtype (default: the current one).
    """
    dev = torch.device(device)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UnlearnkitError(f"threads must be an integer >= 1 (the count actually used), got {threads!r}")
    out: dict[str, Any] = {
        "device": dev.type,
        "deterministic": bool(deterministic),
        "dtype": str(dtype or torch.get_default_dtype()).removeprefix("torch."),
    }
    if dev.type == "cpu":
        out["threads"] = int(threads)
    if dev.type == "cuda":
        out["amp"] = bool(amp)
    return out


# -- sidecar validation ---------------------------------------------------------------------------------------


def _finite_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def validate_info(info: Any) -> str | None:
    """Why ``info`` (what training recorded) is not a valid sidecar record, or ``None`` if it is."""
    if not isinstance(info, dict):
        return f"info is a {type(info).__name__}, not an object"
    for k, v in info.items():
        if not isinstance(k, str):
            return f"info has a non-string key {k!r}"
        if isinstance(v, float) and not math.isfinite(v):
            return f"info.{k} is {v}"
    if "time_s" in info and not (_finite_number(info["time_s"]) and info["time_s"] >= MIN_TIME_S):
        return f"info.time_s is {info['time_s']!r} (a training time must be a finite number >= {MIN_TIME_S} s)"
    if "peak_mem_mb" in info and not (_finite_number(info["peak_mem_mb"]) and info["peak_mem_mb"] >= 0):
        return f"info.peak_mem_mb is {info['peak_mem_mb']!r} (must be a finite number >= 0)"
    for k in ("loss", "retrain_time_s"):
        if k in info and not _finite_number(info[k]):
            return f"info.{k} is {info[k]!r} (must be a finite number)"
    if "batch" in info and not (isinstance(info["batch"], int) and not isinstance(info["batch"], bool)
                                and info["batch"] >= 1):  # fmt: skip
        return f"info.batch is {info['batch']!r} (must be an integer >= 1)"
    for k in ("device", "mode"):
        if k in info and not isinstance(info[k], str):
            return f"info.{k} is {info[k]!r} (must be a string)"
    return None


def _sanitise_info(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` as stored: JSON-normalised, a sub-millisecond time raised to :data:`MIN_TIME_S`, and any
    value :func:`validate_info` would refuse (e.g. a NaN) left out, so a stored entry always reads back."""
    out = _normalise({str(k): v for k, v in dict(info).items()})
    if _finite_number(out.get("time_s")) and 0 <= out["time_s"] < MIN_TIME_S:
        out["time_s"] = MIN_TIME_S
    return {k: v for k, v in out.items() if validate_info({k: v}) is None}


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- the cache ------------------------------------------------------------------------------------------------


class ModelCache:
    """Directory of trained models keyed by config hash, verified on every load (see the module docstring).

    Args:
        root: the directory (default ``$UNLEARNKIT_CACHE/models``).
        lock_timeout_s: how long to wait for another process training the same entry (``-1``: forever).
    """

    def __init__(self, root: str | Path | None = None, *, lock_timeout_s: float = -1) -> None:
        self.root = Path(root) if root is not None else default_cache_dir() / "models"
        self.lock_timeout_s = lock_timeout_s

    def path(self, key: dict[str, Any]) -> Path:
        """Where the model for ``key`` lives."""
        return self.root / f"{config_hash(key)}.safetensors"

    def __contains__(self, key: dict[str, Any]) -> bool:
        """Whether an entry exists for ``key`` (not verified; :meth:`load` verifies)."""
        return self.path(key).is_file()

    def exists(self, key: dict[str, Any]) -> bool:
        """Whether either file of ``key``'s entry is present (a half-written or damaged entry counts)."""
        p = self.path(key)
        return p.is_file() or sidecar_path(p).is_file()

    # -- locking ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, keys: dict[str, Any] | Sequence[dict[str, Any]]) -> Iterator[None]:
        """Hold the advisory locks of one or several entries (taken in a fixed order, so never deadlocks)."""
        ks = [keys] if isinstance(keys, dict) else list(keys)
        paths = sorted({self.path(k).with_suffix(".lock") for k in ks})
        with contextlib.ExitStack() as stack:
            for p in paths:
                try:
                    p.parent.mkdir(parents=True, exist_ok=True)
                    stack.enter_context(FileLock(str(p), timeout=self.lock_timeout_s, mode=0o666))
                except OSError as e:  # e.g. a read-only shared cache: writing the entry will fail with its own error
                    warnings.warn(f"cannot lock cache entry {p} ({e.strerror or e}); going on without a lock",
                                  CacheEntryWarning, stacklevel=3)  # fmt: skip
            yield

    # -- verified reads -----------------------------------------------------------------------------------
    def _check(self, key: dict[str, Any], model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The verified state dict and info of ``key``'s entry; raises :class:`_BadEntry` with the reason."""
        p = self.path(key)
        side = sidecar_path(p)
        if not side.is_file():
            raise _BadEntry("its JSON sidecar is missing")
        try:
            record = json.loads(side.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _BadEntry(f"its sidecar is not readable JSON ({e})") from None
        if not isinstance(record, dict):
            raise _BadEntry(f"its sidecar holds a {type(record).__name__}, not an object")
        if not isinstance(record.get("key"), dict):
            raise _BadEntry("its sidecar has no key object")
        if record["key"] != _normalise(key):
            raise _BadEntry("its sidecar's key is not the requested one")
        digest = record.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64:
            raise _BadEntry("its sidecar has no SHA-256 of the weights")
        why = validate_info(record.get("info", {}))
        if why is not None:
            raise _BadEntry(f"its sidecar is invalid: {why}")
        try:
            actual = file_sha256(p)
        except OSError as e:
            raise _BadEntry(f"the weights file is unreadable ({e.strerror or e})") from None
        if actual != digest:
            raise _BadEntry("the weights file does not have the SHA-256 its sidecar records")
        try:
            state = read_state_dict(p)
        except UnlearnkitError as e:
            raise _BadEntry(str(e)) from None
        own = model.state_dict()
        if set(own) != set(state) or any(own[k].shape != state[k].shape for k in own):
            raise _BadEntry("its weights do not fit the model")
        bad = next((k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
        if bad is not None:
            raise _BadEntry(f"its weights hold NaN or infinite values (e.g. {bad!r})")
        return state, record.get("info", {})

    def quarantine(self, key: dict[str, Any], reason: str) -> list[Path]:
        """Rename ``key``'s files aside (``<name>.quarantined-<UTC time>``) and warn; returns the new paths."""
        p = self.path(key)
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        moved = []
        for f in (p, sidecar_path(p)):
            if f.exists():
                target = f.with_name(f"{f.name}.quarantined-{stamp}")
                try:
                    os.replace(f, target)
                    moved.append(target)
                except OSError:
                    with contextlib.suppress(OSError):
                        f.unlink()
        warnings.warn(
            f"model cache entry {p} is damaged ({reason}); moved aside as {p.name}.quarantined-{stamp} and training "
            "the model again",
            CacheEntryWarning,
            stacklevel=3,
        )
        return moved

    def load(self, key: dict[str, Any], model: nn.Module, *, quarantine: bool = True) -> dict[str, Any] | None:
        """Load ``key``'s verified weights into ``model`` and return the recorded info, or ``None`` on a miss.

        A damaged entry is quarantined (with ``quarantine=False`` it is only treated as a miss) and ``model``
        is left untouched.
        """
        if not self.exists(key):
            return None
        try:
            state, info = self._check(key, model)
        except _BadEntry as e:
            if quarantine:
                self.quarantine(key, str(e))
            return None
        model.load_state_dict(state, strict=True)
        return info

    def info(self, key: dict[str, Any]) -> dict[str, Any]:
        """What training recorded for ``key``'s entry, if its sidecar is valid and names ``key`` ({} otherwise).

        Reads the sidecar only; :meth:`load` is what verifies the weights."""
        try:
            record = json.loads(sidecar_path(self.path(key)).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        if not isinstance(record, dict) or record.get("key") != _normalise(key):
            return {}
        info = record.get("info", {})
        return info if validate_info(info) is None else {}

    # -- writes -------------------------------------------------------------------------------------------
    def save(self, key: dict[str, Any], model: nn.Module, info: dict[str, Any]) -> Path:
        """Store ``model`` under ``key`` with ``info``; refuses non-finite weights (they would never load)."""
        bad = next((k for k, t in model.state_dict().items()
                    if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)  # fmt: skip
        if bad is not None:
            raise TrainingDivergedError(f"training produced NaN or infinite weights (e.g. {bad!r}); not cached")
        p = self.path(key)
        clean = _sanitise_info(info)
        save_weights(model, p)
        record = {"format": FORMAT, "key": _normalise(key), "sha256": file_sha256(p), "info": clean}
        write_sidecar(p, record, strict=True)
        return p

    def get_or_train(
        self,
        key: dict[str, Any],
        make_model: Callable[[], nn.Module],
        train: Callable[[nn.Module], dict[str, Any]],
    ) -> tuple[nn.Module, dict[str, Any], bool]:
        """Return ``(model, info, trained_now)``; ``train(model)`` runs only on a cache miss.

        ``make_model()`` is called once: a miss trains that very model (so its initial weights are what
        the caller's seeding gave). ``info`` is what ``train`` returned (stored in the sidecar), e.g.
        ``{"time_s": 3.2}``. A damaged entry is quarantined and trained again; while one process trains an
        entry, another that needs it waits and then loads it.
        """
        model = make_model()
        info = self.load(key, model, quarantine=False)  # fast path, no lock; a damaged entry is dealt with below
        if info is not None:
            return model.eval(), info, False
        with self.lock(key):
            info = self.load(key, model)  # written meanwhile by another process? (or damaged: quarantined)
            if info is not None:
                return model.eval(), info, False
            info = train(model)
            self.save(key, model, info)
        return model.eval(), _sanitise_info(info), True
