"""Run a sweep's cells on Ray: one task per reference model, one task per cell, results back to the driver.

The executor has the same interface as :class:`~unlearnkit.experiments.runner.InProcessExecutor`
(``map(cells, progress)`` yields records as they complete), so :func:`~unlearnkit.experiments.runner.drive`
— the only writer of ``results.db`` — is the same for every backend.

Order of work:

1. For every distinct reference model (the original model trained on D, keyed by seed and the train
   indices; the retrained model trained on D_r, keyed by seed and the retain indices; see
   :func:`~unlearnkit.experiments.runner.reference_keys`) one *reference task* trains it into the model
   cache under ``cache_dir`` (the sweep's ``artifacts``; a shared filesystem path on a cluster) — or finds
   it there. Each model is trained by exactly one task, so no two tasks race to write it.
2. Every *cell task* takes its two reference tasks' results as arguments, so Ray starts it only when both
   models are in the cache; it runs :func:`~unlearnkit.experiments.runner.run_cell` (which loads them)
   and returns the record. A reference that failed (e.g. NaN loss) makes its cells failed records with
   the reason, without retraining it in every cell. With ``lira_shadows`` > 0, each LiRA shadow model is
   one more reference task (one per shadow index and scenario: a part of the ``shadow_bank`` resource,
   built by the resource builder's per-part function), so cells find the shadow bank trained.
3. The driver collects records with ``ray.wait`` as they complete and yields them; a task whose worker
   died (after ``max_retries`` reruns) becomes a failed record. A bad-input error raised in a worker
   stops the sweep, as it does in-process.

Running counts come from a small zero-CPU actor the tasks check in and out of.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch

from unlearnkit.engine import ModelCache, config_hash, resolve_device
from unlearnkit.errors import UnlearnkitError
from unlearnkit.experiments.config import RaySection
from unlearnkit.experiments.progress import ProgressSink
from unlearnkit.experiments.record import RunRecord
from unlearnkit.experiments.runner import (
    Cell,
    _bundle,
    concept_data_of,
    load_or_train_reference,
    new_record,
    reference_keys,
    resource_builder,
    run_cell,
)
from unlearnkit.scenario import Scenario

try:
    import ray
    from ray.exceptions import GetTimeoutError, RayError, RayTaskError
except ImportError:  # pragma: no cover - depends on the environment
    raise UnlearnkitError("the Ray backend needs the 'ray' package: pip install 'unlearnkit[ray]'") from None

ROLES = ("original", "retrain")
SHADOW = "lira_shadow"
#: default ports: the GCS of ``ray start --head`` and the Ray Client server
GCS_PORT, CLIENT_PORT = 6379, 10001
_POLL_S = 0.5


# -- work done in the workers ------------------------------------------------------------------------------


def _set_threads(num_cpus: float) -> None:
    """Use as many torch threads as the task reserved CPUs (results depend on the thread count)."""
    torch.set_num_threads(max(1, int(num_cpus)))


def train_reference(cell: Cell, role: str, *, cache_dir: str | Path, device: str) -> dict[str, Any]:
    """Train (or find in the cache) the ``role`` reference model of ``cell``; never raises on NaN.

    Uses :func:`~unlearnkit.experiments.runner.load_or_train_reference`, as ``run_cell`` does, so a model
    trained here is bit-identical to one trained in-process with the same thread count. A setting-3 cell's
    one reference is its original CLIP (:func:`~unlearnkit.concept.original_clip`, as ``run_cell`` gets it).

    Returns:
        ``{"role", "ok", "error", "cached"}``; ``error`` is ``"TypeName: message"`` when training failed.
    """
    if cell.setting == 3:
        return _train_concept_original(cell, cache_dir=cache_dir, device=device)
    bundle = _bundle(cell.dataset, cell.data_root, cell.download)
    scenario = Scenario(bundle, cell.forget, cell.seed, val_fraction=cell.val_fraction)
    dev = resolve_device(device)
    if dev.type == "cpu" and cell.threads:  # as run_cell does, so the cell finds the model under its key
        torch.set_num_threads(cell.threads)
    key = reference_keys(cell, scenario, device=dev, threads=torch.get_num_threads(),
                         deterministic=getattr(cell, "deterministic", True))[ROLES.index(role)]  # fmt: skip
    cache = ModelCache(Path(cache_dir) / "models")
    out: dict[str, Any] = {"role": role, "ok": True, "error": None, "cached": key in cache}
    if out["cached"]:
        return out
    try:
        load_or_train_reference(cell, role, scenario, cache=cache, device=dev)
    except UnlearnkitError:
        raise
    except Exception as e:  # NaN loss or another training failure: the cells get it as their error
        out.update(ok=False, error=f"{type(e).__name__}: {e}")
    return out


def _train_concept_original(cell: Cell, *, cache_dir: str | Path, device: str) -> dict[str, Any]:
    from unlearnkit.concept import original_clip

    p = cell.concept or {}
    dev = resolve_device(device)
    if dev.type == "cpu" and cell.threads:  # as run_cell does: the thread count is part of the cache key
        torch.set_num_threads(cell.threads)
    out: dict[str, Any] = {"role": "original", "ok": True, "error": None, "cached": False}
    try:
        _, _, trained = original_clip(
            concept_data_of(cell), p["clip"], p.get("pretrain") or {}, cell.seed,
            cache=ModelCache(Path(cache_dir) / "models"), device=dev,
        )  # fmt: skip
        out["cached"] = not trained
    except UnlearnkitError:
        raise
    except Exception as e:  # NaN loss or another pretraining failure: the cells get it as their error
        out.update(ok=False, error=f"{type(e).__name__}: {e}")
    return out


def concept_original_id(cell: Cell) -> str:
    """Identity of the original CLIP a setting-3 cell starts from (one reference task per identity)."""
    p = cell.concept or {}
    return config_hash({"role": "concept_original", "dataset": cell.dataset, "seed": cell.seed,
                        **{k: p.get(k) for k in ("world", "visu", "clip", "pretrain")}})  # fmt: skip


def wants_shadows(cell: Cell) -> bool:
    """Whether ``cell`` computes a metric that needs the shadow bank, so it needs the scenario's shadow models."""
    from unlearnkit.metrics import METRICS

    if not cell.lira_shadows:
        return False
    names = cell.metrics if cell.metrics is not None else METRICS.list()
    return any("shadow_bank" in METRICS.get(n).needs for n in names)


def shadow_key(cell: Cell, m: int, *, data: str, threads: int) -> str:
    """Identity of shadow model ``m`` of ``cell``'s shadow bank (everything that determines it): the cell's
    fields, the data fingerprint ``data`` and the torch ``threads`` it is trained with."""
    fields = ("dataset", "forget", "seed", "val_fraction", "model", "model_kwargs", "train", "lira_shadows",
              "lira_nonmember_split")  # fmt: skip
    ident = {f: getattr(cell, f) for f in fields}
    return config_hash({"role": SHADOW, "m": m, "data": data, "threads": threads, **ident})


def train_shadow(cell: Cell, m: int, *, cache_dir: str | Path, device: str) -> dict[str, Any]:
    """Train (or find in the cache) LiRA shadow model ``m`` of ``cell``'s scenario, as the cell would.

    Goes through the resource builder's per-part function of ``shadow_bank``, so the shadow is the one the
    cell's builder then loads from the model cache.
    """
    from unlearnkit.metrics import MetricUnavailable

    bundle = _bundle(cell.dataset, cell.data_root, cell.download)
    scenario = Scenario(bundle, cell.forget, cell.seed, val_fraction=cell.val_fraction)
    out: dict[str, Any] = {"role": SHADOW, "ok": True, "error": None, "cached": False}
    dev = resolve_device(device)
    if dev.type == "cpu" and cell.threads:  # as run_cell does: the thread count is part of the shadow's key
        torch.set_num_threads(cell.threads)
    try:
        builder = resource_builder(cell, scenario, cache_dir=cache_dir, device=resolve_device(device))
        builder.build_part("shadow_bank", m)
    except (UnlearnkitError, MetricUnavailable):
        return out  # bad input or LiRA not computable: the cell reports it
    except Exception as e:  # the cell retrains it and records the failure, as in-process
        out.update(ok=False, error=f"{type(e).__name__}: {e}")
    return out


def _reference_task(cell: Cell, role: str, cache_dir: str, device: str, num_cpus: float, tracker: Any) -> dict:
    """Train one reference model (``role``: original, retrain, or ``lira_shadow:<m>``)."""
    tag = f"{role}:{cell.key}"
    tracker.start.remote(tag)
    try:
        _set_threads(num_cpus)
        if role.startswith(SHADOW):
            return train_shadow(cell, int(role.split(":")[1]), cache_dir=cache_dir, device=device)
        return train_reference(cell, role, cache_dir=cache_dir, device=device)
    finally:
        tracker.end.remote(tag)


def _cell_task(cell: Cell, cache_dir: str, device: str, num_cpus: float, tracker: Any, *refs: dict) -> RunRecord | dict:
    """Run one cell once its reference models are in the cache (``refs``: the reference tasks' results)."""
    failed = [r for r in refs if not r["ok"] and r["role"] in ROLES]
    if failed:
        return {"reference_failed": failed[0]["error"]}
    tag = f"cell:{cell.key}"
    tracker.start.remote(tag)
    try:
        _set_threads(num_cpus)
        return run_cell(cell, cache_dir=cache_dir, device=device)
    finally:
        tracker.end.remote(tag)


class _Tracker:
    """Which tasks are executing now (tasks check in and out; the driver polls the count)."""

    def __init__(self) -> None:
        self.running: set[str] = set()

    def start(self, tag: str) -> None:
        self.running.add(tag)

    def end(self, tag: str) -> None:
        self.running.discard(tag)

    def count(self) -> int:
        return len(self.running)


# -- the driver side -----------------------------------------------------------------------------------------


def failed_record(cell: Cell, scenario: Scenario | None, error: str) -> RunRecord:
    """The record of a cell that could not run, from the one record builder (``runner.new_record``)."""
    return new_record(cell, scenario).failed(error)


def _host_port(address: str) -> tuple[str, int]:
    """``host:port`` of a Ray address (``ray://`` Client addresses default to port 10001, GCS to 6379)."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address:
            current = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
            address = current.read_text().strip() if current.is_file() else ""
        if not address:
            raise UnlearnkitError("no running Ray cluster found for --ray-address auto (start one with `ray start`)")
    client = address.startswith("ray://")
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError:
        raise UnlearnkitError(f"--ray-address {address!r} has an invalid port") from None
    if not parts.hostname:
        raise UnlearnkitError(f"--ray-address {address!r} is not host:port, ray://host:port or auto")
    return parts.hostname, port or (CLIENT_PORT if client else GCS_PORT)


def probe(address: str, timeout_s: float) -> None:
    """Fail fast, with one line, when nothing answers at ``address`` (``ray.init`` would retry for minutes)."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except TimeoutError:
        raise UnlearnkitError(f"cannot reach a Ray cluster at {address}: no answer within {timeout_s:g} s") from None
    except OSError as e:
        raise UnlearnkitError(f"cannot reach a Ray cluster at {address}: {e.strerror or e}") from None


class RayExecutor:
    """Runs cells as Ray tasks (see the module docstring); only the driver writes the store.

    Args:
        cache_dir: the artifacts directory (model cache), visible to every worker at the same path.
        device: where cells run (``auto`` resolves on each worker: a task with ``num_gpus`` > 0 sees its GPU).
        resources: CPUs/GPUs per task and retries.
    """

    def __init__(self, *, cache_dir: str | Path, device: str, resources: RaySection | None = None) -> None:
        self.cache_dir, self.device = str(cache_dir), device
        self.resources = resources or RaySection()
        self.started = False

    def connect(self, address: str | None = None, timeout_s: float = 10.0, **init: Any) -> None:
        """Join the cluster at ``address``, or start Ray locally; an already initialised Ray is used as it is.

        Args:
            address: ``host:port`` (GCS), ``ray://host:port`` (Ray Client) or ``auto``; ``None``: local.
            timeout_s: how long ``address`` may take to answer.
            **init: extra ``ray.init`` arguments for a local Ray (``num_cpus``, ``object_store_memory``, ...).
        """
        if address is not None:
            probe(address, timeout_s)
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        if address is not None:
            kwargs["address"] = address
        else:  # a private local cluster: no dashboard, no start-up notices
            kwargs.update(include_dashboard=False, logging_level=logging.ERROR, **init)
        try:
            ray.init(**kwargs)
        except Exception as e:  # version mismatch, not a Ray endpoint, ...
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UnlearnkitError(f"could not start or join {where}: {first}") from None
        self.started = True

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self.started and ray.is_initialized():
            ray.shutdown()
        self.started = False

    def map(self, cells: list[Cell], progress: ProgressSink) -> Iterator[RunRecord]:
        """Submit the reference tasks, then the cell tasks; yield each cell's record as it completes."""
        if not cells:
            return
        res = self.resources
        ref_opts = {**res.task_resources(reference=True), "max_retries": res.max_retries}
        cell_opts = {**res.task_resources(reference=False), "max_retries": res.max_retries}
        ref_fn, cell_fn = ray.remote(_reference_task), ray.remote(_cell_task)
        tracker = ray.remote(num_cpus=0)(_Tracker).remote()

        scenarios: dict[tuple, Scenario | None] = {}
        references: dict[str, ray.ObjectRef] = {}  # cache-key hash -> reference task
        pending: dict[ray.ObjectRef, tuple[Cell, Scenario | None, list[str]]] = {}
        for cell in cells:
            sk = (cell.dataset, cell.data_root, cell.download, cell.forget, cell.seed, cell.val_fraction)
            if cell.setting == 3:  # one reference: the seed's original CLIP
                scenarios[sk], hashes = None, [concept_original_id(cell)]
                roles = {hashes[0]: "original"}
            else:
                if sk not in scenarios:
                    bundle = _bundle(cell.dataset, cell.data_root, cell.download)
                    scenarios[sk] = Scenario(bundle, cell.forget, cell.seed, val_fraction=cell.val_fraction)
                threads = cell.threads or max(1, int(ref_opts["num_cpus"]))  # what the reference task will use
                keys = reference_keys(cell, scenarios[sk], device=resolve_device(self.device), threads=threads,
                                      deterministic=getattr(cell, "deterministic", True))  # fmt: skip
                hashes = [config_hash(key) for key in keys]
                roles = dict(zip(hashes, ROLES, strict=True))
            if wants_shadows(cell):
                fp = scenarios[sk].bundle.fingerprint()
                roles.update({shadow_key(cell, m, data=fp, threads=threads): f"{SHADOW}:{m}"
                              for m in range(cell.lira_shadows)})  # fmt: skip
            for h, role in roles.items():
                if h not in references:
                    references[h] = ref_fn.options(**ref_opts).remote(
                        cell, role, self.cache_dir, self.device, ref_opts["num_cpus"], tracker
                    )
            ref = cell_fn.options(**cell_opts).remote(
                cell, self.cache_dir, self.device, cell_opts["num_cpus"], tracker, *(references[h] for h in roles)
            )
            pending[ref] = (cell, scenarios[sk], hashes)

        refs_left, refs_failed = list(references.values()), 0
        counted: set[str] = set()
        try:
            while pending:
                waiting = list(pending)
                ready, rest = ray.wait(waiting, num_returns=1, timeout=_POLL_S)
                if ready and rest:
                    more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                    ready += more
                if refs_left:
                    done, refs_left = ray.wait(refs_left, num_returns=len(refs_left), timeout=0)
                    refs_failed += sum(not _ok(r) for r in done)
                self._report(progress, tracker, len(references) - len(refs_left), len(references), refs_failed)
                for r in ready:
                    cell, scenario, hashes = pending.pop(r)
                    rec = self._record(r, cell, scenario)
                    # count each model a reference task trained (not found cached) once, on its first cell
                    new = [h for h in hashes if h not in counted and _trained(references[h])]
                    counted.update(hashes)
                    rec.trained_models += len(new)
                    yield rec
        finally:
            for r in [*pending, *refs_left]:
                ray.cancel(r, force=True)
            ray.kill(tracker)

    @staticmethod
    def _report(progress: ProgressSink, tracker: Any, done: int, total: int, failed: int) -> None:
        running = getattr(progress, "running", None)
        if running is not None:
            try:
                running(ray.get(tracker.count.remote(), timeout=5))
            except GetTimeoutError:
                pass
        references = getattr(progress, "references", None)
        if references is not None:
            references(done, total, failed)

    @staticmethod
    def _record(ref: ray.ObjectRef, cell: Cell, scenario: Scenario | None) -> RunRecord:
        """The record a finished task returned, or a failed record when its worker died."""
        try:
            out = ray.get(ref)
        except RayTaskError as e:
            cause = e.cause if isinstance(e.cause, BaseException) else None
            if isinstance(cause, UnlearnkitError):
                raise cause from None  # bad input found in a worker stops the sweep, as in-process
            return failed_record(cell, scenario, f"task failed: {_one_line(e)}")
        except RayError as e:  # the worker died (out of memory, node lost) after its retries
            return failed_record(cell, scenario, f"worker lost: {type(e).__name__}: {_one_line(e)}")
        if isinstance(out, dict) and "reference_failed" in out:
            return failed_record(cell, scenario, f"reference training failed: {out['reference_failed']}")
        return out


def _ok(ref: ray.ObjectRef) -> bool:
    try:
        return bool(ray.get(ref)["ok"])
    except RayError:
        return False


def _trained(ref: ray.ObjectRef) -> bool:
    """Whether a finished reference task trained its model (rather than finding it in the cache)."""
    ready, _ = ray.wait([ref], timeout=0)
    if not ready:
        return False
    try:
        out = ray.get(ref)
    except RayError:
        return False
    return bool(out["ok"] and not out["cached"])


def _one_line(e: BaseException) -> str:
    """The last non-empty line of an error (Ray's messages end with the original ``Type: message``)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else type(e).__name__
