"""The benchmark runner: config -> scenarios -> cached original/retrained models -> methods -> store.

One path for the CLI, the Python API and sweeps:

1. Validate everything up front (dataset, model, forget specs, methods and their hyperparameters,
   metrics, device, output directory), so bad input fails before any training and nothing is written.
2. For each (forget request, seed): build the :class:`~unlearnkit.scenario.Scenario`; train (or load from
   the cache) the original model on D and the retrained model on D_r, keyed by config hash.
3. For each applicable method: skip if its run key is already in ``results.db``; else unlearn a copy of
   the original, measure time and peak memory, evaluate every metric, and store the row in one
   transaction. A run that fails (e.g. NaN loss) is stored as failed with its reason; the others go on.
4. Regenerate ``report.json``, ``report.md`` and ``report.html`` from the store.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import unlearnkit
from unlearnkit.data import DATASETS, DatasetBundle, load_dataset
from unlearnkit.engine import ModelCache, config_hash, resolve_device, seed_everything, train_model
from unlearnkit.errors import ConfigError, UnlearnkitError
from unlearnkit.experiments.config import RunConfig
from unlearnkit.experiments.memory import peak_memory
from unlearnkit.experiments.progress import NullProgress, ProgressSink
from unlearnkit.experiments.store import ResultsStore
from unlearnkit.methods import METHODS, Method, UnlearnData, create_method
from unlearnkit.metrics import METRICS, evaluate, value_to_json
from unlearnkit.models import MODELS, create_model
from unlearnkit.scenario import ForgetRequest, Scenario

#: pseudo-method name of the model before unlearning (a row in every report)
ORIGINAL = "original"


@dataclass
class BenchmarkResult:
    """What a benchmark did."""

    out_dir: Path
    ran: int = 0
    skipped: int = 0
    failed: int = 0
    trained_models: int = 0
    not_applicable: list[str] = field(default_factory=list)
    reports: dict[str, Path] = field(default_factory=dict)
    wall_s: float = 0.0


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and prove a file can be written there; one-line error otherwise."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p, prefix=".write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UnlearnkitError(f"output directory {p} is not writable ({e.strerror or e})") from None
    return p


def resolve_methods(cfg: RunConfig) -> list[Method]:
    """Instantiate and validate the configured methods (``all``: every registered setting-1 method)."""
    specs = cfg.method_specs()
    if specs is None:
        return [create_method(n) for n in METHODS.list() if METHODS.get(n).setting == 1]
    if not specs:
        raise ConfigError("no methods selected")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"a method is listed twice in {names}")
    methods = [create_method(s.name, **s.params) for s in specs]
    if "retrain" not in names:  # every report shows the gold standard beside each method
        methods.insert(0, create_method("retrain"))
    for m in methods:
        m.validate_params()
    return methods


def validate_config(cfg: RunConfig) -> tuple[list[Method], list[ForgetRequest], torch.device]:
    """Everything that can be checked without data: names, hyperparameters, metrics, device."""
    DATASETS.get(cfg.dataset)
    MODELS.get(cfg.model)
    requests = [ForgetRequest.parse(f) for f in cfg.forget]
    methods = resolve_methods(cfg)
    for name in cfg.metrics or []:
        METRICS.get(name)
    device = resolve_device(cfg.device)
    for m in methods:
        if all(m.unsupported_reason(r) for r in requests):
            if cfg.methods != "all":
                raise UnlearnkitError(m.unsupported_reason(requests[0]) or f"method {m.name!r} does not apply")
    return methods, requests, device


def _versions() -> dict[str, str]:
    return {"unlearnkit": unlearnkit.__version__, "torch": torch.__version__}


def run_benchmark(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    progress: ProgressSink | None = None,
    bundle: DatasetBundle | None = None,
) -> BenchmarkResult:
    """Run (or resume) the benchmark described by ``cfg`` into ``out_dir``.

    Args:
        cfg: the validated config.
        out_dir: where ``results.db`` and the reports go.
        progress: a progress sink (e.g. :class:`~unlearnkit.experiments.progress.RichProgress`).
        bundle: an already loaded dataset (Python API: any user dataset via ``from_torch``).
    """
    t_start = time.perf_counter()
    progress = progress or NullProgress()
    methods, requests, device = validate_config(cfg)
    out = ensure_writable_dir(out_dir)
    if bundle is None:
        bundle = load_dataset(cfg.dataset, cfg.data_root, cfg.download)
    # Build every scenario before writing anything: bad requests (unknown class, empty set) fail here.
    scenarios = [
        Scenario(bundle, r, seed, val_fraction=cfg.val_fraction) for r in requests for seed in cfg.seeds
    ]
    store = ResultsStore(out / "results.db")
    cache = ModelCache(Path(cfg.cache_dir) / "models" if cfg.cache_dir else None)
    result = BenchmarkResult(out_dir=out)

    plan = [(s, [m for m in methods if m.unsupported_reason(s.request) is None]) for s in scenarios]
    for s in scenarios:
        for m in methods:
            reason = m.unsupported_reason(s.request)
            if reason and reason not in result.not_applicable:
                result.not_applicable.append(reason)
    progress.start(sum(len(ms) + 1 for _, ms in plan))  # +1: the original model's row
    try:
        for scenario, scenario_methods in plan:
            _run_scenario(cfg, scenario, scenario_methods, store, cache, device, progress, result)
    finally:
        progress.close()
    from unlearnkit.reports import write_reports

    result.reports = write_reports(store.runs(), out)
    result.wall_s = time.perf_counter() - t_start
    return result


@dataclass(eq=False)
class Cell:
    """One run of a scenario: a method with its (record) parameters; ``shots`` for no-retain methods."""

    name: str
    params: dict[str, Any]
    method: Method | None
    shots: int | None = None
    key: str = ""

    @property
    def label(self) -> str:
        return self.name if self.shots is None else f"{self.name} k={self.shots}"


def _timing(info: dict[str, Any], retrain_time: float) -> dict[str, float]:
    """Costs recorded when a cached model was trained (time, peak memory)."""
    out = {"time_s": float(info["time_s"]), "retrain_time_s": retrain_time} if "time_s" in info else {}
    if "peak_mem_mb" in info:
        out["peak_mem_mb"] = float(info["peak_mem_mb"])
    return out


def _run_key(base: dict[str, Any], method: str, params: dict[str, Any]) -> str:
    return config_hash({**base, "method": method, "params": params})


def _run_scenario(
    cfg: RunConfig,
    scenario: Scenario,
    methods: list[Method],
    store: ResultsStore,
    cache: ModelCache,
    device: torch.device,
    progress: ProgressSink,
    result: BenchmarkResult,
) -> None:
    spec = scenario.spec()
    train_cfg = cfg.train.to_train_config()
    base = {
        "scenario": spec, "splits_hash": scenario.splits_hash(), "model": cfg.model,
        "model_kwargs": cfg.model_kwargs, "train": train_cfg.to_dict(),
    }  # fmt: skip
    label_base = f"{spec['dataset']} {spec['forget']} s{scenario.seed}"
    todo = [Cell(ORIGINAL, {}, None)]
    for m in methods:
        if m.setting == 2:  # no retain data: one cell per number of forget images k
            todo += [Cell(m.name, {**m.get_params(), "shots": k}, m, shots=k) for k in cfg.shots]
        else:
            todo.append(Cell(m.name, m.get_params(), m))
    for c in todo:
        c.key = _run_key(base, c.name, c.params)
    pending = [c for c in todo if not store.has(c.key)]
    for c in todo:
        if c not in pending:  # already stored: a rerun skips it
            result.skipped += 1
            progress.run_finished(f"{label_base} {c.label} (stored)", "ok")
    if not pending:
        return

    def make_model() -> nn.Module:
        return create_model(cfg.model, scenario.bundle.num_classes, scenario.bundle.in_shape, **cfg.model_kwargs)

    def record(cell: Cell, status: str, metrics: dict[str, Any], error: str | None) -> None:
        rec = {
            "key": cell.key, "status": status, "error": error, "scenario": spec, "model": cfg.model,
            "method": cell.name, "params": cell.params, "seed": scenario.seed, "config": base, "metrics": metrics,
            "splits_hash": base["splits_hash"], "versions": _versions(),
        }  # fmt: skip
        store.put(rec, scenario.splits_dict())
        result.ran += 1
        result.failed += status == "failed"
        progress.run_finished(f"{label_base} {cell.label}", status)

    # -- the original (trained on D) and the retrained (on D_r) models, each trained once ---------------
    key_common = {"dataset": spec["dataset"], "model": cfg.model, "model_kwargs": cfg.model_kwargs,
                  "train": train_cfg.to_dict(), "seed": scenario.seed}  # fmt: skip
    orig_key = {**key_common, "role": "original", "train_idx": config_hash({"i": scenario.train_idx.tolist()})}
    retr_key = {**key_common, "role": "retrain", "retain_idx": config_hash({"i": scenario.retain_idx.tolist()})}

    def trainer(split: str, role: str) -> Callable[[nn.Module], dict[str, Any]]:
        def _train(model: nn.Module) -> dict[str, Any]:
            progress.run_started(f"{label_base} train {role}")
            gen = seed_everything(scenario.seed)
            t0 = time.perf_counter()
            with peak_memory(device) as mem:
                train_model(model, scenario.split(split), train_cfg, device=device, generator=gen,
                            on_epoch=progress.epoch, where=f"training the {role} model")  # fmt: skip
            result.trained_models += 1
            info: dict[str, Any] = {"time_s": time.perf_counter() - t0, "device": str(device)}
            if mem.mb is not None:
                info["peak_mem_mb"] = mem.mb
            return info

        return _train

    try:
        seed_everything(scenario.seed)
        original, original_info, _ = cache.get_or_train(orig_key, make_model, trainer("train", "original"))
        seed_everything(scenario.seed)
        retrained, retrain_info, _ = cache.get_or_train(retr_key, make_model, trainer("retain", "retrained"))
    except (UnlearnkitError, KeyboardInterrupt):
        raise
    except Exception as e:  # NaN loss or another failure: every pending run of this scenario fails
        for c in pending:
            record(c, "failed", {}, f"reference training failed: {type(e).__name__}: {e}")
        return
    original.to(device)
    retrained.to(device)
    torch.manual_seed(scenario.seed + 1_000_003)
    random_model = make_model().to(device).eval()  # ZRF's incompetent teacher: never trained
    retrain_time = float(retrain_info.get("time_s", 0.0))

    def metrics_of(model: nn.Module, timing: dict[str, float]) -> dict[str, Any]:
        vals = evaluate(model, scenario, reference=retrained, random_model=random_model, original=original,
                        metrics=cfg.metrics, timing=timing, device=device)  # fmt: skip
        return {k: value_to_json(v) for k, v in vals.items()}

    for c in pending:
        progress.run_started(f"{label_base} {c.label}")
        if c.method is None:  # the original model's row; its cost is that of training it on D
            record(c, "ok", metrics_of(original, _timing(original_info, retrain_time)), None)
            continue
        try:
            if c.name == "retrain":  # the cached reference *is* this run; its cost is retraining's
                model, timing = retrained, _timing(retrain_info, retrain_time)
            else:
                data = _unlearn_data(cfg, scenario, c, make_model, train_cfg, device, progress)
                with peak_memory(device) as mem:
                    model = c.method.unlearn(original, data)
                timing = {"time_s": c.method.elapsed_s_, "retrain_time_s": retrain_time}
                if mem.mb is not None:
                    timing["peak_mem_mb"] = mem.mb
            metrics = metrics_of(model, timing)
            # method-specific figures (e.g. trainable-parameter count) recorded by the method itself
            metrics.update({k: value_to_json(v) for k, v in getattr(c.method, "report_", {}).items()})
            record(c, "ok", metrics, None)
        except (KeyboardInterrupt, UnlearnkitError):
            raise
        except Exception as e:
            tb = traceback.extract_tb(e.__traceback__)[-1]
            record(c, "failed", {}, f"{type(e).__name__}: {e} (at {Path(tb.filename).name}:{tb.lineno})")


def _unlearn_data(
    cfg: RunConfig,
    scenario: Scenario,
    cell: Cell,
    make_model: Callable[[], nn.Module],
    train_cfg: Any,
    device: torch.device,
    progress: ProgressSink,
) -> UnlearnData:
    """What a method may see: every training split (setting 1), or only k forget images (setting 2)."""
    if cell.shots is None:
        return UnlearnData.from_scenario(
            scenario, make_model=make_model, train_config=train_cfg, device=device, on_epoch=progress.epoch
        )
    data = UnlearnData.from_scenario(scenario, provide=(), device=device, on_epoch=progress.epoch)
    data._forget = scenario.few_shot_forget(cell.shots, folder=cfg.few_shot_folder)
    return data
