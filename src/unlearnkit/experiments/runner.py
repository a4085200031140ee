"""The benchmark runner: config -> cells -> (cached reference models, unlearning, evaluation) -> store.

One path for the CLI, the Python API and sweeps:

1. :func:`plan` validates everything up front (dataset, model, forget specs, methods and their
   hyperparameters, metrics, device) and expands the config into :class:`Cell` s — one per stored row:
   the original model, then each applicable method, for every (forget request, seed). Bad input fails
   here, before any training, and nothing is written.
2. An executor runs :func:`run_cell` on each cell not yet in ``results.db``. A cell loads (or trains
   once, cached by config hash) the original model on D and the retrained model on D_r, unlearns a
   copy of the original, measures time and peak memory, evaluates every metric, and *returns* its
   record. A run that fails (e.g. NaN loss) returns a failed record with the reason; the others go on.
3. Only the driver writes to the store, one transaction per record, so an interrupted benchmark keeps
   every finished row and a rerun skips them.
4. ``report.json``, ``report.md`` and ``report.html`` are regenerated from the store.

The in-process executor is the default; :mod:`unlearnkit.experiments` sweeps hand the same cells to Ray.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearnkit._config import MAX_CELLS, check_cell_count
from unlearnkit._meta import __version__
from unlearnkit.data import DATASETS, DatasetBundle, load_dataset
from unlearnkit.engine import (
    EnsembleCache,
    ModelCache,
    TrainConfig,
    config_hash,
    default_cache_dir,
    load_checkpoint,
    resolve_device,
    seed_everything,
    train_model,
)
from unlearnkit.engine.cache import compute_context
from unlearnkit.engine.checks import collapse_flag, nonfinite_reason, nonfinite_weights
from unlearnkit.engine.ensemble import ensemble_path
from unlearnkit.engine.seed import preserved_global_state
from unlearnkit.errors import ConfigError, UnlearnkitError
from unlearnkit.experiments.config import AnyRunConfig, ConceptRunConfig, RunConfig, load_concept_entries
from unlearnkit.experiments.memory import peak_memory
from unlearnkit.experiments.progress import NullProgress, ProgressSink
from unlearnkit.experiments.record import RunRecord, clean_metric
from unlearnkit.experiments.store import ResultsStore, writer_lock
from unlearnkit.methods import METHODS, Method, UnlearnData, check_method_modality, create_method
from unlearnkit.metrics import evaluate, select_metrics
from unlearnkit.metrics.epsilon_score import KEYS as ENSEMBLE_KEYS
from unlearnkit.models import MODELS, create_model, model_fingerprint
from unlearnkit.protocols import ResourceBuilder, ResourceInputs, ResourceMemo
from unlearnkit.scenario import ForgetRequest, Scenario

#: pseudo-method name of the model before unlearning (a row in every report)
ORIGINAL = "original"
#: pseudo-method name of a model handed in by the user (``unlearnkit audit``); params hold its checkpoint
AUDIT = "audit"


# -- planning ----------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One run = one stored row. Plain data (picklable), so any executor can ship it to a worker.

    Attributes:
        dataset, data_root, download, forget, seed, val_fraction: the scenario.
        model, model_kwargs, train: the architecture and the recipe of the original/retrained models.
        method: a registered method name, or ``"original"``.
        params: the method's hyperparameters as recorded (plus ``shots`` for no-retain methods).
        shots: number of forget images for setting-2 (no retain data) methods, else ``None``.
        metrics: metric names to compute (``None``: all registered).
        few_shot_folder: external images for setting-2 methods.
        threads: torch CPU threads (0: torch's default); float results depend on it, so it is in the key.
        deterministic: whether torch's deterministic algorithms are requested (``seed_everything`` does);
            in the key so a future non-deterministic mode cannot share results with this one.
        key: the hash of everything above that determines the result (the store's primary key).
    """

    dataset: str
    forget: str
    seed: int
    model: str
    method: str
    params: dict[str, Any]
    train: dict[str, Any]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    download: bool = False
    val_fraction: float = 0.1
    shots: int | None = None
    metrics: list[str] | None = None
    few_shot_folder: str | None = None
    threads: int = 1
    deterministic: bool = True
    lira_shadows: int = 0
    lira_fixed_variance: bool = True
    lira_nonmember_split: str = "auto"
    ulira_out: str = "unlearned"
    ensemble_n: int = 0
    ensemble_batch_models: int = 16
    ensemble_originals: str = "shared"
    ensemble_mode: str = "auto"
    #: which run path: 3 for a CLIP concept run (its CLIP-specific config sections in ``concept``), else 1 (the
    #: classifier path of settings 1 and 2; a record's own setting comes from its method)
    setting: int = 1
    #: setting 3: ``world``, ``visu``, ``clip``, ``pretrain``, ``eval_batch_size``, ``save_models`` (plain data)
    concept: dict[str, Any] | None = None
    relearn: dict[str, Any] | None = None
    key: str = ""

    @property
    def label(self) -> str:
        """Short human-readable name for progress displays."""
        k = "" if self.shots is None else f" k={self.shots}"
        return f"{self.dataset} {self.forget} s{self.seed} {self.method}{k}"

    def identity(self) -> dict[str, Any]:
        """What determines the result (hashed into :attr:`key`)."""
        d = asdict(self)
        for k in ("key", "data_root", "download", "metrics", "ensemble_batch_models"):
            d.pop(k)
        if not d["ensemble_n"]:  # ε score off: keys stay what they were before ensembles existed
            for k in ("ensemble_n", "ensemble_originals", "ensemble_mode"):
                d.pop(k)
        if not d["lira_shadows"]:  # LiRA off: keys stay what they were before LiRA existed
            for k in ("lira_shadows", "lira_fixed_variance", "lira_nonmember_split", "ulira_out"):
                d.pop(k)
        if d["setting"] != 3:  # classifier runs: keys stay what they were before CLIP runs were cells
            d.pop("setting")
            d.pop("concept")
        else:  # where an export goes does not change the result
            d["concept"] = {k: v for k, v in d["concept"].items() if k not in ("save_models", "export_dir")}
        if not d["relearn"]:  # relearning attacks off: keys stay what they were before the attacks existed
            d.pop("relearn")
        return d


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
    #: ``"<run>: <reason>"`` of each failed run, in the order they finished
    errors: list[str] = field(default_factory=list)
    #: runs scored but flagged (e.g. a collapsed model)
    flagged: int = 0
    #: cells skipped because they are stored as failed by an earlier run (``retry_failed`` reruns them)
    failed_before: int = 0


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


def check_writable(path: str | Path, what: str) -> Path:
    """Check that ``path`` can be created and written, without creating anything; one-line error if not."""
    p = Path(path).expanduser().resolve()
    if p.exists() and not p.is_dir():
        raise UnlearnkitError(f"{what} {p} is a file, not a directory: name a folder (it is created if missing)")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UnlearnkitError(f"{what} {p} is not writable ({probe} is not a directory)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UnlearnkitError(f"{what} {p} is not writable (no write permission on {probe})")
    return p


def check_locations(out_dir: str | Path, cache_dir: str | Path | None) -> None:
    """Refuse, before any work, an output directory or model cache that cannot be created and written."""
    check_writable(out_dir, "output directory")
    check_writable(Path(cache_dir) if cache_dir else default_cache_dir(), "model cache")


def resolve_methods(cfg: RunConfig) -> list[Method]:
    """Instantiate and validate the configured methods (``all``: every registered setting-1 method).

    ``retrain`` is always included: every report shows the gold standard beside each method.
    """
    specs = cfg.method_specs()
    if specs is None:
        return [create_method(n) for n in METHODS.list() if METHODS.get(n).setting == 1]
    if not specs:
        raise ConfigError("no methods selected")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"a method is listed twice in {names}")
    if any(n not in METHODS for n in names):  # perhaps a CLIP method: registered, so the message can say so
        load_concept_entries()
    methods = [create_method(check_method_modality(s.name, "classifier").name, **s.params) for s in specs]
    if "retrain" not in names:
        methods.insert(0, create_method("retrain"))
    for m in methods:
        m.validate_params()
    return methods


def validate_config(
    cfg: RunConfig, bundle: DatasetBundle | None = None
) -> tuple[list[Method], list[ForgetRequest], torch.device]:
    """Everything that can be checked without data: names, hyperparameters, metrics, device.

    With a ``bundle`` (a user's dataset, e.g. from ``from_torch``) the config's dataset name need not be registered.
    """
    if bundle is None:
        DATASETS.get(cfg.dataset)
    MODELS.get(cfg.model.name)
    requests = [ForgetRequest.parse(f) for f in cfg.forget]
    methods = resolve_methods(cfg)
    if cfg.metrics is not None:
        select_metrics(cfg.metrics, "classifier", "a setting-1/2 config")
    device = resolve_device(cfg.device)
    if cfg.methods != "all":
        for m in methods:
            if all(m.unsupported_reason(r) for r in requests):
                raise UnlearnkitError(m.unsupported_reason(requests[0]) or f"method {m.name!r} does not apply")
    return methods, requests, device


def plan(
    cfg: AnyRunConfig, bundle: DatasetBundle | None = None, *, max_cells: int | None = None
) -> tuple[list[Cell], list[str]]:
    """Validate ``cfg`` and expand it into cells; also return why some (method, request) pairs were skipped.

    Every scenario is built here (so an unknown class or an empty forget set fails before any work).
    With ``max_cells``, the number of cells is counted first (without data) and refused above it. A
    setting-3 config gives an ``original`` cell per seed and one cell per method variant and seed.
    """
    if isinstance(cfg, ConceptRunConfig):
        cells = plan_concept(cfg)
        if max_cells is not None:
            check_cell_count(len(cells), max_cells)
        return cells, []
    methods, requests, _ = validate_config(cfg, bundle)
    if max_cells is not None:
        per_seed = sum(1 + sum(len(cfg.shots) if m.setting == 2 else 1 for m in methods if not m.unsupported_reason(r))
                       for r in requests)  # fmt: skip
        check_cell_count(per_seed * len(cfg.seeds), max_cells)
    bundle = bundle if bundle is not None else _bundle(cfg.dataset, cfg.data_root, cfg.download)
    probe = create_model(cfg.model.name, bundle.num_classes, bundle.in_shape, **cfg.model_kwargs)
    for m in methods:  # an architecture a method cannot unlearn (LoRA without attention): refused before training
        m.check_model(probe)
    train = cfg.train.to_train_config().to_dict()
    common = {
        "dataset": bundle.name, "model": cfg.model.name, "model_kwargs": dict(cfg.model_kwargs), "train": train,
        "data_root": cfg.data_root, "download": cfg.download, "val_fraction": cfg.val_fraction,
        "metrics": cfg.metrics, "few_shot_folder": cfg.few_shot_folder, "threads": cfg.threads,
        "lira_shadows": cfg.lira_shadows,
        "lira_fixed_variance": cfg.lira_fixed_variance, "lira_nonmember_split": cfg.lira_nonmember_split,
        "ulira_out": cfg.ulira_out,
        "ensemble_n": cfg.ensemble_n, "ensemble_batch_models": cfg.ensemble_batch_models,
        "ensemble_originals": cfg.ensemble_originals, "ensemble_mode": cfg.ensemble_mode,
        "relearn": cfg.relearn.for_cell(),
    }  # fmt: skip
    cells: list[Cell] = []
    skipped: list[str] = []
    for req in requests:
        for seed in cfg.seeds:
            Scenario(bundle, req, seed, val_fraction=cfg.val_fraction)  # validates the request on the data
            cells.append(Cell(forget=str(req), seed=seed, method=ORIGINAL, params={}, **common))
            for m in methods:
                reason = m.unsupported_reason(req)
                if reason:
                    if reason not in skipped:
                        skipped.append(reason)
                    continue
                shots_list = cfg.shots if m.setting == 2 else [None]
                for k in shots_list:
                    params = m.get_params() if k is None else {**m.get_params(), "shots": k}
                    cells.append(Cell(forget=str(req), seed=seed, method=m.name, params=params, shots=k, **common))
    for c in cells:
        c.key = config_hash(c.identity())
    return cells, skipped


def validate_concept_config(cfg: ConceptRunConfig) -> list[Any]:
    """Everything a setting-3 config can have checked without data: methods, metrics, device, the CLIP source."""
    load_concept_entries(required=True)
    from unlearnkit.concept.sources import check_clip_source

    specs = cfg.method_specs()
    if not specs:
        raise ConfigError("no methods selected")
    methods = [create_method(check_method_modality(s.name, "clip").name, **s.params) for s in specs]
    seen = [config_hash({"m": m.name, "p": m.get_params()}) for m in methods]
    if len(set(seen)) != len(seen):  # the same method may run with different hyperparameters, not twice alike
        raise ConfigError(f"a method is listed twice with the same hyperparameters in {[s.name for s in specs]}")
    for m in methods:
        m.validate_params()
    if cfg.metrics is not None:
        select_metrics(cfg.metrics, "clip", "a setting-3 config")
    resolve_device(cfg.device)
    check_clip_source(cfg.clip.model_dump(), cfg.dataset)
    hyperbolic = [m.name for m in methods if getattr(m, "geometry", "euclidean") == "lorentz"]
    if hyperbolic and cfg.clip.from_pretrained is not None and cfg.clip.lorentz_checkpoint is None:
        raise ConfigError(f"{', '.join(hyperbolic)} start(s) from a hyperbolic CLIP: give clip.lorentz_checkpoint "
                          "(a MERU/HySAC safetensors file on the from_pretrained towers)")  # fmt: skip
    if cfg.clip.lorentz_checkpoint is not None:
        from unlearnkit.concept.hysac_checkpoint import check_lorentz_checkpoint

        check_lorentz_checkpoint(cfg.clip.lorentz_checkpoint)
    return methods


def plan_concept(cfg: ConceptRunConfig, *, with_methods: bool = True) -> list[Cell]:
    """The cells of a setting-3 config: per seed, the original CLIP, then each method variant.

    ViSU files (and the checkpoint's tokenizer/processor) are read here once, so a missing file fails
    before any work. ``with_methods=False`` plans only the original cells (``audit``).
    """
    methods = validate_concept_config(cfg)
    from unlearnkit.concept.sources import FORGET

    common: dict[str, Any] = {
        "dataset": cfg.dataset, "forget": FORGET, "model": cfg.clip.label, "train": {}, "metrics": cfg.metrics,
        "threads": cfg.threads, "setting": 3, "relearn": cfg.relearn.for_cell(),
    }  # fmt: skip
    # each method is compared with the original of its geometry: the Euclidean CLIP, or the hyperbolic MERU
    # model (geometry "lorentz": its cells carry it in the payload and a model label of their own)
    chosen = methods if with_methods else []
    geometries = [g for g in ("euclidean", "lorentz") if any(getattr(m, "geometry", "euclidean") == g for m in chosen)]
    if not with_methods or not geometries:
        geometries = ["euclidean", *(["lorentz"] if cfg.clip.lorentz_checkpoint else [])]
    cells: list[Cell] = []
    for seed in cfg.seeds:
        for geometry in geometries:
            payload = cfg.concept_payload()
            row = dict(common)
            if geometry == "lorentz":
                payload["geometry"] = "lorentz"
                row["model"] = f"{cfg.clip.label}-meru"
                if payload.get("pretrain") and cfg.pretrain.meru_epochs is not None:  # the MERU original's schedule
                    payload["pretrain"] = {**payload["pretrain"], "epochs": cfg.pretrain.meru_epochs}
            same = [m for m in chosen if getattr(m, "geometry", "euclidean") == geometry]
            for name, params in [(ORIGINAL, {}), *((m.name, m.get_params()) for m in same)]:
                cells.append(Cell(seed=seed, method=name, params=params, concept=dict(payload), **row))
    for c in cells:
        c.key = config_hash(c.identity())
    if cfg.dataset == "visu" and cells:
        concept_data_of(cells[0])
    return cells


def with_export_dir(cells: list[Cell], out: Path) -> list[Cell]:
    """Point the setting-3 cells that export their models (``save_models``) at ``out/models``."""
    for c in cells:
        if c.concept is not None and c.concept.get("save_models"):
            c.concept["export_dir"] = str(out / "models")
    return cells


# -- executing one cell ---------------------------------------------------------------------------------------


def _bundle(dataset: str, root: str | None, download: bool) -> DatasetBundle:
    """The dataset, loaded once per process and state of its files: a folder changed on disk since the last
    load (a file added, removed, resized or touched) is loaded again, never served from memory."""
    return _load_bundle(dataset, root, download, _root_state(root))


@functools.lru_cache(maxsize=4)
def _load_bundle(dataset: str, root: str | None, download: bool, state: tuple[int, int, int]) -> DatasetBundle:
    return load_dataset(dataset, root, download)


def _root_state(root: str | None) -> tuple[int, int, int]:
    """``(files, bytes, newest mtime in ns)`` under ``root`` (zeros without one): cheap, and changes with the data."""
    if root is None or not os.path.isdir(root):
        return (0, 0, 0)
    files = size = newest = 0
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.stat(os.path.join(folder, name))
            files, size, newest = files + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return (files, size, newest)


def _versions() -> dict[str, str]:
    return {"unlearnkit": __version__, "torch": torch.__version__}


@functools.lru_cache(maxsize=2)
def _concept_data(dataset: str, seed: int, sections: str) -> Any:
    """The concept data for a dataset, seed and the JSON of the ``world``/``visu``/``clip`` sections (cached)."""
    from unlearnkit.concept.sources import load_concept_data

    p = json.loads(sections)
    return load_concept_data(dataset, seed, world=p["world"], visu=p["visu"], clip=p["clip"])


def concept_data_of(cell: Cell) -> Any:
    """The :class:`~unlearnkit.concept.ConceptData` a setting-3 cell runs on (cached per process)."""
    p = cell.concept or {}
    seed = cell.seed if cell.dataset == "concept_world" else 0  # ViSU is the same for every seed
    sections = {k: p.get(k) for k in ("world", "visu", "clip")}
    return _concept_data(cell.dataset, seed, json.dumps(sections, sort_keys=True))


def reference_keys(
    cell: Cell, scenario: Scenario, *, device: torch.device | str, threads: int, deterministic: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cache keys of the original (trained on D) and retrained (on D_r) models a cell needs.

    Each holds the data fingerprint, the architecture fingerprint, the recipe, the seed, the split indices
    and the compute context: ``device`` (its type), the torch ``threads`` used for training and whether
    deterministic kernels are on.
    """
    b = scenario.bundle
    compute = compute_context(device, threads=threads, deterministic=deterministic, amp=bool(cell.train.get("amp")))
    common = {
        "dataset": cell.dataset, "data": b.fingerprint(), "model": cell.model,
        "arch": model_fingerprint(cell.model, b.num_classes, b.in_shape, **cell.model_kwargs),
        "model_kwargs": cell.model_kwargs, "train": cell.train, "seed": cell.seed, "compute": compute,
    }  # fmt: skip
    orig = {**common, "role": "original", "train_idx": config_hash({"i": scenario.train_idx.tolist()})}
    retr = {**common, "role": "retrain", "retain_idx": config_hash({"i": scenario.retain_idx.tolist()})}
    return orig, retr


def load_or_train_reference(
    cell: Cell,
    role: str,
    scenario: Scenario,
    *,
    cache: ModelCache,
    device: torch.device,
    progress: ProgressSink | None = None,
) -> tuple[nn.Module, dict[str, Any], bool]:
    """The ``role`` reference model of ``cell`` from the model cache, or trained once into it.

    ``role`` is ``"original"`` (trained on D) or ``"retrain"`` (trained on D_r). The one place that trains
    reference models: :func:`run_cell` and the Ray backend's reference tasks both call it, so a model is
    the same whichever process trained it. Training errors (e.g. a NaN loss) propagate.

    Returns:
        ``(model, info, trained_now)``; ``info`` holds what training measured (``time_s``, ``peak_mem_mb``).
    """
    progress = progress or NullProgress()
    bundle = scenario.bundle
    split, name = {"original": ("train", "original"), "retrain": ("retain", "retrained")}[role]
    keys = reference_keys(cell, scenario, device=device, threads=torch.get_num_threads(),
                          deterministic=getattr(cell, "deterministic", True))  # fmt: skip
    key = keys[0 if role == "original" else 1]

    def make_model() -> nn.Module:
        return create_model(cell.model, bundle.num_classes, bundle.in_shape, **cell.model_kwargs)

    def train(model: nn.Module) -> dict[str, Any]:
        progress.run_started(f"{cell.dataset} {cell.forget} s{cell.seed} train {name}")
        gen = seed_everything(cell.seed)
        t0 = time.perf_counter()
        with peak_memory(device) as mem:
            train_model(model, scenario.split(split), TrainConfig(**cell.train), device=device, generator=gen,
                        on_epoch=progress.epoch, where=f"training the {name} model")  # fmt: skip
        info: dict[str, Any] = {"time_s": time.perf_counter() - t0, "device": str(device)}
        if mem.mb is not None:
            info["peak_mem_mb"] = mem.mb
        return info

    seed_everything(cell.seed)
    return cache.get_or_train(key, make_model, train)


def new_record(cell: Cell, scenario: Scenario | None = None) -> RunRecord:
    """The record of ``cell`` before it runs: the one place a run record is built (status ``ok``, no metrics).

    Every executor (in-process, Ray workers, the Ray driver for a lost worker) starts from it, so a stored row has
    the same fields whoever produced it. The method's ``setting`` and ``needs`` are recorded with it, so reports
    never consult the method registry of the installation that reads the store. A setting-3 cell's scenario is
    its concept data's (``scenario`` is not used); every row of a setting-3 run records setting 3.
    """
    setting: int | None = None
    needs: tuple[str, ...] = ()
    if cell.method in METHODS:
        cls = METHODS.get(cell.method)
        setting, needs = int(cls.setting), tuple(sorted(cls.needs))
    if cell.setting == 3:
        from unlearnkit.concept.sources import scenario_spec

        data = concept_data_of(cell)
        spec, splits_hash, splits = scenario_spec(data, cell.seed), config_hash({"data": data.spec}), None
        setting, versions = 3, _concept_versions()
    elif scenario is None:
        raise ValueError("new_record needs the scenario of a setting-1/2 cell")
    else:
        spec, splits_hash, splits = scenario.spec(), scenario.splits_hash(), scenario.splits_dict()
        versions = _versions()
    return RunRecord(
        key=cell.key, scenario=spec, model=cell.model, method=cell.method, seed=cell.seed, params=dict(cell.params),
        config={**cell.identity(), "splits_hash": splits_hash}, setting=setting, needs=needs, splits_hash=splits_hash,
        splits=splits, versions=versions,
    )  # fmt: skip


def _error_line(e: BaseException) -> str:
    """``Type: message (at file:line)`` of an unexpected failure, for a failed record."""
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}{where}"


@preserved_global_state()  # the cell's thread count, seeds and determinism flags do not outlive it
def run_cell(
    cell: Cell,
    *,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    progress: ProgressSink | None = None,
    bundle: DatasetBundle | None = None,
) -> RunRecord:
    """Run one cell and return its record (status ``ok`` or ``failed``); never writes to the store.

    Reference models are loaded from (or trained once into) the model cache at ``cache_dir``. A model with
    non-finite weights or outputs (a diverged method, a damaged checkpoint) is a failed run with the reason,
    never scored; a model near chance accuracy is scored and flagged (``record.flags``).
    """
    dev = resolve_device(device)
    with torch_threads(cell.threads if dev.type == "cpu" else 0):
        return _run_cell(cell, cache_dir, dev, progress or NullProgress(), bundle)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` torch intra-op threads inside the block (0: leave as is); the caller's count is restored."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _run_cell(
    cell: Cell, cache_dir: str | Path | None, dev: torch.device, progress: ProgressSink, bundle: DatasetBundle | None
) -> RunRecord:
    if cell.setting == 3:
        return run_concept_cell(cell, cache_dir=cache_dir, device=dev, progress=progress)
    bundle = bundle if bundle is not None else _bundle(cell.dataset, cell.data_root, cell.download)
    scenario = Scenario(bundle, cell.forget, cell.seed, val_fraction=cell.val_fraction)
    record = new_record(cell, scenario)
    record.config["threads_used"] = torch.get_num_threads()  # what ran, beside what the key asked for
    train_cfg = TrainConfig(**cell.train)
    cache = ModelCache(Path(cache_dir) / "models" if cache_dir else None)

    def make_model() -> nn.Module:
        return create_model(cell.model, bundle.num_classes, bundle.in_shape, **cell.model_kwargs)

    probe = scenario.split("test")
    try:
        original, original_info, trained = load_or_train_reference(
            cell, "original", scenario, cache=cache, device=dev, progress=progress
        )
        record.trained_models += trained
        retrained, retrain_info, trained = load_or_train_reference(
            cell, "retrain", scenario, cache=cache, device=dev, progress=progress
        )
        record.trained_models += trained
    except (UnlearnkitError, KeyboardInterrupt):
        raise
    except Exception as e:  # NaN loss or another failure while training a reference model
        return record.failed(f"reference training failed: {type(e).__name__}: {e}")
    original.to(dev)
    retrained.to(dev)
    for name, ref in (("original", original), ("retrained", retrained)):
        bad = nonfinite_reason(ref, probe, device=dev)
        if bad is not None:
            return record.failed(f"the {name} reference model is not usable: {bad}")
    torch.manual_seed(cell.seed + 1_000_003)
    random_model = make_model().to(dev).eval()  # ZRF's incompetent teacher: never trained
    retrain_time = float(retrain_info.get("time_s", 0.0))

    progress.run_started(cell.label)
    try:
        extra: dict[str, Any] = {}
        if cell.method == ORIGINAL:  # the model before unlearning; its cost is that of training it on D
            model, timing = original, _timing(original_info, retrain_time)
        elif cell.method == "retrain":  # the cached reference *is* this run; its cost is retraining's
            model, timing = retrained, _timing(retrain_info, retrain_time)
        elif cell.method == AUDIT:  # a model produced anywhere, evaluated against this scenario's references
            model = load_checkpoint(make_model(), cell.params["checkpoint"]).to(dev).eval()
            timing = {}
        else:
            method = create_method(cell.method, **{k: v for k, v in cell.params.items() if k != "shots"})
            data = _unlearn_data(cell, scenario, make_model, train_cfg, dev, progress)
            with peak_memory(dev) as mem:
                model = method.unlearn(original, data)
            resolved = method.resolved_params(data)  # a request-dependent default, as it was resolved
            if resolved:
                record.config["resolved_params"] = resolved
            timing = {"time_s": method.elapsed_s_, "retrain_time_s": retrain_time}
            if mem.mb is not None:
                timing["peak_mem_mb"] = mem.mb
            extra = getattr(method, "report_", {})  # method-specific figures, e.g. trainable parameters
        bad = nonfinite_reason(model, probe, device=dev)
        if bad is not None:
            what = "checkpoint" if cell.method == AUDIT else f"{cell.method} model"
            return record.failed(f"the {what} is not usable: {bad}; not scored")
        resources = resource_builder(cell, scenario, cache_dir=cache_dir, device=dev, original=original, model=model,
                                     make_model=make_model, progress=progress)  # fmt: skip
        if cell.ensemble_n and any(n in ENSEMBLE_KEYS for n in (cell.metrics or ENSEMBLE_KEYS)):
            progress.run_started(f"{cell.label} ε score, N={cell.ensemble_n}")
            # the path the ensembles are trained by (the fixed rule of ensemble_mode="auto"), stored with the run
            record.config["ensemble_path"] = ensemble_path(cell.ensemble_mode, make_model, scenario.retain, dev)
        values = evaluate(model, scenario, reference=retrained, random_model=random_model, original=original,
                          metrics=cell.metrics, timing=timing, device=dev, resources=resources,
                          options={"lira_fixed_variance": cell.lira_fixed_variance,
                                   "ulira_out": cell.ulira_out})  # fmt: skip
        record.metrics = {k: clean_metric(k, v) for k, v in {**values, **extra}.items()}
        flag = collapse_flag(record.metrics, bundle.num_classes)
        record.flags = (flag,) if flag else ()
    except (KeyboardInterrupt, UnlearnkitError):
        raise
    except Exception as e:
        return record.failed(_error_line(e))
    return record


def run_concept_cell(
    cell: Cell, *, cache_dir: str | Path | None, device: torch.device, progress: ProgressSink
) -> RunRecord:
    """Run one setting-3 cell: the concept data, the original CLIP (cached), the method (or the original
    itself, or an audited CLIP folder), every CLIP metric on the test quadruplets; ``save_models`` exports."""
    from unlearnkit.concept import ConceptUnlearnData, WordTokenizer, evaluate_concept, load_clip
    from unlearnkit.concept.hysac_checkpoint import original_lorentz
    from unlearnkit.concept.pretrain import original_clip
    from unlearnkit.concept.sources import export_clip

    p = cell.concept or {}
    data = concept_data_of(cell)
    record = new_record(cell)
    record.config["threads_used"] = torch.get_num_threads()  # what ran, beside what the key asked for
    cache = ModelCache(Path(cache_dir) / "models" if cache_dir else None)
    label = f"{data.name} {cell.forget} s{cell.seed}"
    make_original = original_lorentz if p.get("geometry") == "lorentz" else original_clip
    try:
        original, info, trained = make_original(
            data, p["clip"], p.get("pretrain") or {}, cell.seed, cache=cache, device=device,
            on_start=lambda what: progress.run_started(f"{label} {what}"), on_epoch=progress.epoch,
        )  # fmt: skip
    except (UnlearnkitError, KeyboardInterrupt):
        raise
    except Exception as e:  # NaN loss or another failure while pretraining the original
        return record.failed(f"pretraining the original CLIP failed: {type(e).__name__}: {e}")
    record.trained_models += int(trained)
    bad = nonfinite_weights(original)
    if bad is not None:
        return record.failed(f"the original CLIP is not usable: it has non-finite weights ({bad})")
    progress.run_started(cell.label)
    try:
        extra: dict[str, Any] = {}
        if cell.method == ORIGINAL:  # the model before unlearning; its cost is that of pretraining it
            model = original
            extra = {"time_s": float(info["time_s"])} if "time_s" in info else {}
        elif cell.method == AUDIT:  # a CLIP folder made anywhere, scored on this scenario's test quadruplets
            folder = Path(cell.params["checkpoint"])
            model = load_clip(folder).to(device)
            if (folder / WordTokenizer.FILE).is_file():  # its own vocabulary encodes the captions
                data = dataclasses.replace(data, tokenizer=WordTokenizer.load(folder))
        else:
            method = create_method(cell.method, **cell.params)
            udata = ConceptUnlearnData(data.train, data.tokenizer, data.val, device=device, seed=cell.seed,
                                       on_epoch=progress.epoch)  # fmt: skip
            model = method.unlearn(original, udata)
            extra = {"time_s": method.elapsed_s_, **{k: float(v) for k, v in getattr(method, "report_", {}).items()}}
        bad = nonfinite_weights(model)
        if bad is not None:
            what = "audited CLIP" if cell.method == AUDIT else f"{cell.method} model"
            return record.failed(f"the {what} is not usable: it has non-finite weights ({bad}); not scored")
        resources = concept_resource_builder(cell, data, cache_dir=cache_dir, device=device, original=original,
                                             model=model, progress=progress)  # fmt: skip
        values = evaluate_concept(model, data, metrics=cell.metrics, batch_size=int(p.get("eval_batch_size", 256)),
                                  resources=resources)  # fmt: skip
        record.metrics = {k: clean_metric(k, v) for k, v in {**values, **extra}.items()}
        if p.get("export_dir") and cell.method not in (ORIGINAL, AUDIT):
            export_clip(model, data, Path(p["export_dir"]) / f"{cell.method}-{cell.key}")
    except (KeyboardInterrupt, UnlearnkitError):
        raise
    except Exception as e:
        return record.failed(_error_line(e))
    return record


def _concept_versions() -> dict[str, str]:
    import transformers

    return {**_versions(), "transformers": transformers.__version__}


@functools.lru_cache(maxsize=4)
def _ensemble_cache(cache_dir: str | None) -> EnsembleCache:
    """One per cache directory and process: every method of a scenario shares the reference figures."""
    return EnsembleCache(Path(cache_dir) / "ensembles" if cache_dir else None)


@functools.lru_cache(maxsize=4)
def _resource_memo(cache_dir: str | None) -> ResourceMemo:
    """One per cache directory and process: every row of a scenario shares its shadow bank and ensembles."""
    return ResourceMemo()


def resource_builder(
    cell: Cell,
    scenario: Scenario,
    *,
    cache_dir: str | Path | None,
    device: torch.device,
    original: nn.Module | None = None,
    model: nn.Module | None = None,
    make_model: Callable[[], nn.Module] | None = None,
    progress: ProgressSink | None = None,
) -> ResourceBuilder:
    """The builder of the resources ``cell``'s metrics need (LiRA shadows, the ε score's ensembles).

    ``original`` is where every unlearning run of the ε score starts; ``model`` is the row's model (an audit
    row's checkpoint: with one checkpoint it is the whole unlearned side, which the ε score refuses).
    """
    given: Any = None
    given_id = None
    if cell.method == AUDIT:  # the audited checkpoints are the unlearned side of the ε score
        members = cell.params.get("audit_set")
        if members and make_model is not None:
            given = functools.partial(_load_checkpoints, members, make_model, device)
            given_id = config_hash({"set": cell.params["audit_set_sha256"]})
        elif model is not None:
            given = [model]
    inputs = ResourceInputs(
        scenario, model=cell.model, model_kwargs=cell.model_kwargs, train=TrainConfig(**cell.train), seed=cell.seed,
        device=device, method=cell.method, params=cell.params, shots=cell.shots, original=original,
        unlearned_models=given, unlearned_models_id=given_id, lira_shadows=cell.lira_shadows,
        lira_nonmember_split=cell.lira_nonmember_split, ensemble_n=cell.ensemble_n,
        ensemble_originals=cell.ensemble_originals, ensemble_batch_models=cell.ensemble_batch_models,
        ensemble_mode=cell.ensemble_mode,
        on_epoch=progress.epoch if progress is not None else None,
        evaluated=model, evaluated_id=cell.key or None, relearn=cell.relearn or {"enabled": False},
    )  # fmt: skip
    key = None if cache_dir is None else str(cache_dir)
    return ResourceBuilder(inputs, cache_dir=cache_dir, memo=_resource_memo(key), ensemble_cache=_ensemble_cache(key))


def concept_resource_builder(
    cell: Cell,
    data: Any,
    *,
    cache_dir: str | Path | None,
    device: torch.device,
    original: nn.Module,
    model: nn.Module,
    progress: ProgressSink | None = None,
) -> ResourceBuilder:
    """The builder of the resources a setting-3 ``cell``'s metrics need: the CLIP relearning attack and the
    generation analogue's models.

    The attack's default learning rate is the pretraining recipe's for a small CLIP (``None``, hence 1e-5,
    for ``from_pretrained`` weights).
    """
    pretrain = (cell.concept or {}).get("pretrain") or {}
    relearn = {**cell.relearn, "train_lr": pretrain.get("lr")} if cell.relearn else {"enabled": False}
    inputs = ResourceInputs(
        None, seed=cell.seed, device=device, method=cell.method, params=cell.params, original=original,
        evaluated=model, evaluated_id=cell.key or None, relearn=relearn, concept_data=data,
        generation=dict((cell.concept or {}).get("generation") or {}),
        on_epoch=progress.epoch if progress is not None else None,
    )  # fmt: skip
    key = None if cache_dir is None else str(cache_dir)
    return ResourceBuilder(inputs, cache_dir=cache_dir, memo=_resource_memo(key), ensemble_cache=_ensemble_cache(key))


def _load_checkpoints(paths: list[str], make_model: Callable[[], nn.Module], device: torch.device) -> list[nn.Module]:
    return [load_checkpoint(make_model(), p).to(device).eval() for p in paths]


def _timing(info: dict[str, Any], retrain_time: float) -> dict[str, float]:
    """Costs recorded when a cached model was trained (time, peak memory)."""
    out = {"time_s": float(info["time_s"]), "retrain_time_s": retrain_time} if "time_s" in info else {}
    if "peak_mem_mb" in info:
        out["peak_mem_mb"] = float(info["peak_mem_mb"])
    return out


def _unlearn_data(
    cell: Cell,
    scenario: Scenario,
    make_model: Callable[[], nn.Module],
    train_cfg: TrainConfig,
    device: torch.device,
    progress: ProgressSink,
) -> UnlearnData:
    """What a method may see: every training split (setting 1), or only k forget images (setting 2)."""
    if cell.shots is None:
        return UnlearnData.from_scenario(
            scenario, make_model=make_model, train_config=train_cfg, device=device, on_epoch=progress.epoch
        )
    data = UnlearnData.from_scenario(scenario, provide=(), device=device, on_epoch=progress.epoch)
    data._forget = scenario.few_shot_forget(cell.shots, folder=cell.few_shot_folder)
    return data


# -- executors and the driver -----------------------------------------------------------------------------------


class InProcessExecutor:
    """Runs cells one after another in this process (the default)."""

    def __init__(
        self, *, cache_dir: str | Path | None, device: str | torch.device, bundle: DatasetBundle | None = None
    ) -> None:
        self.cache_dir, self.device, self.bundle = cache_dir, device, bundle

    def map(self, cells: list[Cell], progress: ProgressSink) -> Iterator[dict[str, Any]]:
        """Yield each cell's record as it completes."""
        for c in cells:
            yield run_cell(c, cache_dir=self.cache_dir, device=self.device, progress=progress, bundle=self.bundle)


def drive(
    cells: list[Cell],
    store: ResultsStore,
    executor: Any,
    progress: ProgressSink,
    result: BenchmarkResult,
    *,
    retry_failed: bool = False,
) -> None:
    """Run the cells not yet stored through ``executor`` and store each record as it arrives."""
    pending = []
    for c in cells:
        status = store.status(c.key)
        if status is None or (retry_failed and status == "failed"):
            pending.append(c)
        else:
            result.skipped += 1
            result.failed_before += status == "failed"
    progress.start(len(pending))
    try:
        for rec in executor.map(pending, progress):
            store.put(rec)
            result.ran += 1
            if not rec.ok:
                result.failed += 1
                result.errors.append(f"{rec.label()}: {rec.error}")
            result.flagged += bool(rec.flags)
            result.trained_models += rec.trained_models
            progress.run_finished(rec.label(), rec.status)
    finally:
        progress.close()


def run_benchmark(
    cfg: AnyRunConfig,
    out_dir: str | Path,
    *,
    progress: ProgressSink | None = None,
    bundle: DatasetBundle | None = None,
    executor: Any = None,
    retry_failed: bool = False,
    max_cells: int | None = MAX_CELLS,
) -> BenchmarkResult:
    """Run (or resume) the benchmark described by ``cfg`` into ``out_dir``.

    Args:
        cfg: the validated config.
        out_dir: where ``results.db`` and the reports go.
        progress: a progress sink (e.g. :class:`~unlearnkit.experiments.progress.RichProgress`).
        bundle: an already loaded dataset (Python API: any user dataset via ``from_torch``).
        executor: runs the cells (default: :class:`InProcessExecutor`).
        retry_failed: rerun cells stored as failed.
        max_cells: refuse to plan more cells than this, before anything is written (``None``: no limit).
    """
    t_start = time.perf_counter()
    progress = progress or NullProgress()
    cells, skipped = plan(cfg, bundle, max_cells=max_cells)
    check_locations(out_dir, cfg.cache_dir)
    out = ensure_writable_dir(out_dir)
    with_export_dir(cells, out)
    result = BenchmarkResult(out_dir=out, not_applicable=skipped)
    executor = executor or InProcessExecutor(cache_dir=cfg.cache_dir, device=cfg.device, bundle=bundle)
    with writer_lock(out):  # a second process on the same out is refused here, before any work
        store = ResultsStore(out / "results.db")
        drive(cells, store, executor, progress, result, retry_failed=retry_failed)
        result.reports = write_reports_from(store, out)
    result.wall_s = time.perf_counter() - t_start
    return result


def audit_cells(
    cfg: AnyRunConfig, checkpoints: str | Path | Sequence[str | Path], bundle: DatasetBundle | None = None
) -> list[Cell]:
    """Cells that evaluate the models in ``checkpoints`` on every (forget request, seed) of ``cfg``.

    Each checkpoint must be safetensors and fit ``cfg.model`` (checked here, before any work); its SHA-256
    goes into the run key, so auditing a changed file is a new run. Each checkpoint gets its own row.
    With N ≥ 2 checkpoints (N runs of one unlearning algorithm, e.g. from N seeds), they are also the
    unlearned side of the NeurIPS-2023 ε score (forget quality F against N retrained models), whatever
    ``cfg.ensemble_n`` says; every audit row of the set carries the set's F.

    For a setting-3 config, each checkpoint is a CLIP folder (see :func:`concept_audit_cells`).
    """
    import hashlib

    from unlearnkit.engine import read_state_dict

    paths = [Path(checkpoints)] if isinstance(checkpoints, str | Path) else [Path(p) for p in checkpoints]
    if not paths:
        raise UnlearnkitError("audit needs at least one checkpoint")
    if isinstance(cfg, ConceptRunConfig):
        return concept_audit_cells(cfg, paths)
    validate_config(cfg, bundle)
    bundle = bundle if bundle is not None else _bundle(cfg.dataset, cfg.data_root, cfg.download)
    probe = create_model(cfg.model.name, bundle.num_classes, bundle.in_shape, **cfg.model_kwargs)
    shas: list[str] = []
    for path in paths:
        load_checkpoint(probe, path)  # not safetensors / does not fit the model -> one-line error
        read_state_dict(path)
        shas.append(hashlib.sha256(path.read_bytes()).hexdigest())
    if len(set(shas)) != len(shas):
        twice = next(p for p, h in zip(paths, shas, strict=True) if shas.count(h) > 1)
        raise UnlearnkitError(f"checkpoint {twice} is given twice (same contents): the audited models must differ")
    group: dict[str, Any] = {}
    if len(paths) > 1:  # the set is the unlearned side of the ε score; its F depends on every member
        group = {"audit_set": [str(p) for p in paths], "audit_set_sha256": shas}
    cells, _ = plan(cfg.model_copy(update={"methods": ["retrain"]}), bundle)
    out = []
    for c in cells:
        if c.method == "retrain":  # one audit cell per checkpoint and scenario, beside its original and retrain rows
            for path, sha in zip(paths, shas, strict=True):
                update = {"method": AUDIT, "params": {"checkpoint": str(path), "sha256": sha, **group}, "key": ""}
                if group:
                    update["ensemble_n"] = len(paths)
                out.append(Cell(**{**c.__dict__, **update}))
        out.append(c)
    for c in out:
        if not c.key:
            ident = {"sha256": c.params.get("sha256"), "set": c.params.get("audit_set_sha256")}
            c.key = config_hash({**c.identity(), "params": ident})
    return out


def concept_audit_cells(cfg: ConceptRunConfig, folders: Sequence[Path]) -> list[Cell]:
    """Cells that score the CLIP folders ``folders`` (``save_pretrained`` exports, e.g. ``save_models``) on every
    seed of the setting-3 config ``cfg``, beside that seed's original CLIP.

    Each folder must load as a CLIP checkpoint (checked here, before any work); the SHA-256 of its files goes
    into the run key. A folder holding ``word_tokenizer.json`` encodes the captions with that vocabulary.
    """
    import hashlib

    from unlearnkit.concept import load_clip

    shas: list[str] = []
    for folder in folders:
        if folder.is_file() and folder.suffix == ".safetensors":
            raise UnlearnkitError(f"a setting-3 audit takes a CLIP folder (save_pretrained), not the file {folder}")
        load_clip(folder)  # not a CLIP folder / not loadable -> one-line error
        digest = hashlib.sha256()
        for f in sorted(p for p in folder.iterdir() if p.is_file()):
            digest.update(f.name.encode() + b"\0" + f.read_bytes())
        shas.append(digest.hexdigest())
    if len(set(shas)) != len(shas):
        twice = next(p for p, h in zip(folders, shas, strict=True) if shas.count(h) > 1)
        raise UnlearnkitError(f"CLIP folder {twice} is given twice (same contents): the audited models must differ")
    out: list[Cell] = []
    for c in plan_concept(cfg, with_methods=False):
        out.append(c)
        for folder, sha in zip(folders, shas, strict=True):
            params = {"checkpoint": str(folder), "sha256": sha}
            cell = Cell(**{**c.__dict__, "method": AUDIT, "params": params, "concept": dict(c.concept or {})})
            cell.key = config_hash({**cell.identity(), "params": {"sha256": sha}})
            out.append(cell)
    return out


def run_audit(
    cfg: AnyRunConfig,
    checkpoints: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    progress: ProgressSink | None = None,
    retry_failed: bool = False,
) -> BenchmarkResult:
    """Evaluate a user's checkpoints against the scenario's references and write the usual store and reports.

    One checkpoint, or N ≥ 2 (N runs of one algorithm): then they also get the ε score as a set
    (see :func:`audit_cells`).
    """
    t_start = time.perf_counter()
    progress = progress or NullProgress()
    cells = audit_cells(cfg, checkpoints)
    check_locations(out_dir, cfg.cache_dir)
    out = ensure_writable_dir(out_dir)
    result = BenchmarkResult(out_dir=out)
    with writer_lock(out):  # a second process on the same out is refused here, before any work
        store = ResultsStore(out / "results.db")
        drive(cells, store, InProcessExecutor(cache_dir=cfg.cache_dir, device=cfg.device), progress, result,
              retry_failed=retry_failed)  # fmt: skip
        result.reports = write_reports_from(store, out)
    result.wall_s = time.perf_counter() - t_start
    return result


def write_reports_from(store: ResultsStore, out: Path, runs: Iterable[dict[str, Any]] | None = None) -> dict[str, Path]:
    """Regenerate the three reports from the store (with the tuning sections when it holds a tuning)."""
    from unlearnkit.reports import write_reports
    from unlearnkit.reports.tuning import tune_sections

    rows = list(runs) if runs is not None else store.runs()
    return write_reports(rows, out, extra_sections=tune_sections(store.studies(), store.trials(), rows))
