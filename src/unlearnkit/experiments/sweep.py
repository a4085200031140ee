"""Sweeps: a grid of benchmarks expanded into cells and run in-process or on Ray, resumable.

A sweep config is a :class:`~unlearnkit.experiments.config.RunConfig` whose grid axes may hold lists::

    name: neggrad_lr
    dataset: digits
    model: [small_cnn, mlp]             # a list: one benchmark per model
    forget: ["class:3", "random:0.1"]   # already a list in a RunConfig
    seeds: [0, 1, 2]                    # idem; {range: [0, 512]} for 0..511
    methods:
      neggrad: {lr: [1.0e-4, 1.0e-3], epochs: 5}   # a list under a hyperparameter: one variant per value
      finetune: {}
    train: {epochs: 30}
    artifacts: /shared/unlearnkit       # the model cache (original/retrained checkpoints); shared on a cluster
    out: runs/neggrad_lr                # results.db + reports (``--out`` overrides)
    ray: {num_cpus: 1, num_gpus: 0.25}  # resources of each Ray task (``--ray`` / ``--ray-address``)

A ``setting: 3`` sweep (CLIP concept unlearning) is a setting-3 config with the same ``methods``, ``seeds``,
``artifacts``, ``out`` and ``ray`` grid keys and no model axis (its ``clip`` section names the CLIP)::

    setting: 3
    world: {n_train: 256}
    methods: {safe_clip: {lambda_unsafe_negatives: [0.25, 0.5], epochs: 1}}
    seeds: [0, 1]

Expansion is the cartesian product of the axes; because a method's cells depend only on its own
hyperparameters, it is computed per method (model × that method's value combinations), which gives the
same union of cells as the full product without planning duplicates. Every resulting ``RunConfig`` goes
through :func:`~unlearnkit.experiments.runner.plan`; cells are merged by key (``retrain`` and ``original``
appear once per scenario). A hyperparameter whose *value* is a list is written as a one-value grid,
``[[a, b]]``. The same method may appear several times in a ``methods`` list with different fixed values.

:func:`run_sweep` then runs the cells through the one driver (:func:`~unlearnkit.experiments.runner.drive`):
cells already in ``results.db`` are skipped, only the driver writes the store, failed cells are stored as
failed (``retry_failed`` reruns them). Every input is checked before anything is written.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from rich.console import Console
from rich.progress import TaskID

from unlearnkit._config import MAX_CELLS, MAX_SEEDS, SEED_LIMIT, check_cell_count, one_line, read_yaml
from unlearnkit.engine import default_cache_dir
from unlearnkit.engine.device import DEVICES
from unlearnkit.errors import ConfigError, UnlearnkitError, suggest
from unlearnkit.experiments.config import (
    AnyRunConfig,
    RaySection,
    RunConfig,
    flattened,
    load_concept_entries,
    parse_config,
)
from unlearnkit.experiments.progress import NullProgress, ProgressSink, progress_bars
from unlearnkit.experiments.runner import (
    BenchmarkResult,
    Cell,
    InProcessExecutor,
    check_writable,
    drive,
    ensure_writable_dir,
    plan,
    with_export_dir,
    write_reports_from,
)
from unlearnkit.experiments.store import ResultsStore, check_unlocked, writer_lock
from unlearnkit.methods import METHODS

#: keys a sweep config has on top of a RunConfig's
SWEEP_KEYS = ("artifacts", "out", "ray")
#: RunConfig keys that are lists already (their values are the grid)
LIST_AXES = ("forget", "seeds", "shots")

Backend = Literal["inprocess", "ray"]


@dataclass
class SweepConfig:
    """A validated sweep: a base RunConfig mapping plus the grid axes.

    Attributes:
        name: the sweep's name (default output folder ``runs/<name>``).
        base: RunConfig fields shared by every benchmark of the grid (``model``/``methods`` excluded).
        models: the model axis (``None`` for a setting-3 grid: its CLIP is the ``clip`` section of ``base``).
        methods: ``"all"``, or ``(name, {param: [values]})`` per method entry (fixed values are one-element lists).
        artifacts: the model cache directory (absolute), or ``None`` for the default cache.
        out: the output directory from the config, or ``None``.
        ray: Ray task resources.
        source: where the config came from (for messages).
    """

    name: str
    base: dict[str, Any]
    models: list[str] | None
    methods: Literal["all"] | list[tuple[str, dict[str, list[Any]]]]
    artifacts: str | None = None
    out: str | None = None
    ray: RaySection = field(default_factory=RaySection)
    source: str = "sweep config"

    @property
    def seeds(self) -> list[int]:
        """The seeds every cell is asked for."""
        return list(self.base.get("seeds", [0]))

    @property
    def device(self) -> str:
        """The configured device (resolved where the cell runs)."""
        return str(self.base.get("device", "auto"))

    def run_configs(self) -> list[AnyRunConfig]:
        """Expand the grid into run configs (one per model × method value combination)."""
        out = []
        for model in self.models if self.models is not None else [None]:
            fixed = {**self.base, "model": model} if model is not None else dict(self.base)
            if self.methods == "all":
                out.append(parse_config({**fixed, "methods": "all"}, self.source))
                continue
            for name, grid in self.methods:
                keys = list(grid)
                for values in itertools.product(*(grid[k] for k in keys)):
                    params = dict(zip(keys, values, strict=True))
                    out.append(parse_config({**fixed, "methods": [{"name": name, "params": params}]}, self.source))
        return out


@dataclass
class SweepPlan:
    """The cells of a sweep (merged by key) and why some (method, request) pairs were skipped."""

    cells: list[Cell]
    skipped: list[str]
    n_configs: int


# -- parsing ------------------------------------------------------------------------------------------------


def _grid_values(value: Any, where: str) -> list[Any]:
    """A grid axis as a list of values: a list is a grid (non-empty), anything else one value."""
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: empty grid (give at least one value)")
        return list(value)
    return [value]


def _seed_range(spec: dict[str, Any], source: str) -> list[int]:
    """``{range: [start, stop]}`` (or ``{range: stop}``) -> ``list(range(start, stop))``."""
    r = spec.get("range") if set(spec) == {"range"} else None
    r = [r] if isinstance(r, int) else r
    if not (isinstance(r, list) and 1 <= len(r) <= 2 and all(isinstance(v, int) and v >= 0 for v in r)):
        raise ConfigError(f"{source}: seeds: expected a list of seeds or {{range: [start, stop]}}, got {spec!r}")
    seeds = range(*r)
    if r[-1] > SEED_LIMIT or len(seeds) > MAX_SEEDS:
        raise ConfigError(
            f"{source}: seeds: range {r} is out of bounds (seeds lie in [0, 2**32), at most {MAX_SEEDS:,} of them)"
        )
    return list(seeds)


def _method_entries(methods: Any, source: str) -> Literal["all"] | list[tuple[str, dict[str, list[Any]]]]:
    """Normalise the ``methods`` section and check every grid key against the method's hyperparameters."""
    if methods == "all":
        return "all"
    if isinstance(methods, dict):
        entries = [(name, params) for name, params in methods.items()]
    elif isinstance(methods, list):
        if not methods:
            raise ConfigError(f"{source}: methods: empty grid (give at least one method)")
        entries = []
        for i, m in enumerate(methods):
            if isinstance(m, str):
                entries.append((m, {}))
            elif isinstance(m, dict) and set(m) <= {"name", "params"} and isinstance(m.get("name"), str):
                entries.append((m["name"], m.get("params")))
            else:
                raise ConfigError(f"{source}: methods.{i}: expected a method name or {{name: ..., params: {{...}}}}")
    else:
        raise ConfigError(f"{source}: methods: expected 'all', a list of methods or a mapping name -> params")
    out: list[tuple[str, dict[str, list[Any]]]] = []
    for name, params in entries:
        where = f"{source}: methods.{name}"
        if not isinstance(name, str):
            raise ConfigError(f"{source}: methods: a method name must be a string, got {name!r}")
        try:
            valid = METHODS.get(name)._get_param_names()
        except UnlearnkitError as e:
            raise ConfigError(f"{source}: methods: {e}") from None
        params = params or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: expected a mapping of hyperparameters, got {type(params).__name__}")
        grid = {}
        for key, value in params.items():
            if key not in valid:
                raise ConfigError(
                    f"{where}.{key}: method {name!r} has no hyperparameter {key!r}{suggest(str(key), valid)}; "
                    f"its hyperparameters: {', '.join(valid) or 'none'}"
                )
            grid[key] = _grid_values(value, f"{where}.{key}")
        out.append((name, grid))
    return out


def parse_sweep(data: Any, source: str = "sweep config") -> SweepConfig:
    """Validate a mapping into a :class:`SweepConfig`; problems raise :class:`ConfigError` (one line).

    Checks, before any data is loaded: unknown keys, grid keys that name no hyperparameter (with a
    did-you-mean), empty grids, every value of every axis (each expanded RunConfig is validated).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}")
    data = dict(data)
    try:
        ray = RaySection.model_validate(data.pop("ray", None) or {})
    except ValidationError as e:
        raise ConfigError(one_line(e, f"{source}: ray")) from None
    data = flattened(data, source)  # sections spread into flat keys: the grid axes are flat names
    artifacts, out = data.pop("artifacts", None), data.pop("out", None)
    for key, v in (("artifacts", artifacts), ("out", out)):
        if v is not None and not isinstance(v, str | os.PathLike):
            raise ConfigError(f"{source}: {key}: expected a path, got {type(v).__name__}")
    if artifacts is not None and data.get("cache_dir") is not None:
        raise ConfigError(f"{source}: give the model cache as either 'artifacts' or 'cache_dir', not both")
    artifacts = artifacts if artifacts is not None else data.pop("cache_dir", None)
    data.pop("cache_dir", None)
    if isinstance(data.get("seeds"), dict):
        data["seeds"] = _seed_range(data["seeds"], source)
    for axis in LIST_AXES:
        if axis in data and isinstance(data[axis], list) and not data[axis]:
            raise ConfigError(f"{source}: {axis}: empty grid (give at least one value)")
    concept = data.get("setting") == 3  # a CLIP grid: no model axis (the clip section names the CLIP)
    if concept:
        load_concept_entries(required=True)  # registers the CLIP methods the grid names
    models = None if concept else [str(m) for m in _grid_values(data.pop("model", "small_cnn"), f"{source}: model")]
    if models is not None and len(set(models)) != len(models):
        raise ConfigError(f"{source}: model: a model is listed twice in {models}")
    methods = _method_entries(data.pop("methods", "all"), source)
    if data.get("data_root"):
        data["data_root"] = str(Path(data["data_root"]).expanduser().resolve())  # workers may run elsewhere
    # validate the base (every field but the grid axes) once, with a representative model and method
    first = {**data, "model": models[0]} if models is not None else data
    cfg0 = parse_config(first, source)
    base = cfg0.flat() if isinstance(cfg0, RunConfig) else cfg0.model_dump()
    # keep only what the user set (defaults stay defaults)
    base = {k: v for k, v in base.items() if k in data and k not in ("model", "methods", "cache_dir")}
    sweep = SweepConfig(
        name=str(data.get("name", "sweep")), base=base, models=models, methods=methods,
        artifacts=str(Path(artifacts).expanduser().resolve()) if artifacts is not None else None,
        out=str(out) if out is not None else None, ray=ray, source=source,
    )  # fmt: skip
    sweep.run_configs()  # every combination is a valid RunConfig (types, ranges of RunConfig fields)
    return sweep


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and validate a YAML sweep config."""
    return parse_sweep(read_yaml(path, "sweep config"), str(Path(path)))


# -- planning -------------------------------------------------------------------------------------------------


def plan_sweep(sweep: SweepConfig, *, device_check: bool = True) -> SweepPlan:
    """Expand the grid and plan every benchmark; cells with the same key are merged (first one kept).

    Args:
        sweep: the validated sweep.
        device_check: resolve the configured device here (``False`` on Ray: the workers have the GPUs,
            the driver may not; the device name is still checked).
    """
    configs = sweep.run_configs()
    cells: dict[str, Cell] = {}
    skipped: list[str] = []
    for cfg in configs:
        if not device_check:
            base = cfg.device.lower().split(":")[0]
            if base not in DEVICES:
                raise ConfigError(f"unknown device {cfg.device!r}; expected one of {', '.join(DEVICES)}")
            cfg = cfg.replace(device="cpu")
        cs, sk = plan(cfg)
        for c in cs:
            cells.setdefault(c.key, c)
        skipped += [s for s in sk if s not in skipped]
    return SweepPlan(cells=list(cells.values()), skipped=skipped, n_configs=len(configs))


# -- progress ---------------------------------------------------------------------------------------------------


class SweepProgress:
    """A rich display over cells: done / total, running, failed, ETA; reference models on Ray; epochs in-process.

    Implements :class:`~unlearnkit.experiments.progress.ProgressSink` plus :meth:`running` and
    :meth:`references`, which executors that run cells elsewhere (Ray) call to report what they see.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._p = progress_bars(self.console)
        self._cells: TaskID | None = None
        self._refs: TaskID | None = None
        self._epochs: TaskID | None = None
        self.done = self.failed = self.n_running = 0
        self._remote = False  # True once an executor reports running counts itself

    def _info(self) -> None:
        if self._cells is not None:
            parts = [f"running {self.n_running}"] + ([f"[red]failed {self.failed}[/red]"] if self.failed else [])
            self._p.update(self._cells, info=" · ".join(parts))

    def start(self, total: int) -> None:
        """Begin a sweep of ``total`` cells to run."""
        self._p.start()
        self._cells = self._p.add_task("cells", total=total, info="")
        self._refs = self._p.add_task("reference models", total=1, info="", visible=False)
        self._epochs = self._p.add_task("epochs", total=1, info="", visible=False)
        self._info()

    def run_started(self, label: str) -> None:
        """In-process: a training or unlearning step began (one cell runs at a time)."""
        if not self._remote:
            self.n_running = 1
            self._info()
        if self._epochs is not None:
            self._p.update(self._epochs, description=label, completed=0, total=1, info="", visible=True)

    def run_finished(self, label: str, status: str) -> None:
        """A cell's record was stored."""
        self.done += 1
        if status == "failed":
            self.failed += 1
            self.console.print(f"[red]failed[/red] {label}", highlight=False)
        if not self._remote:
            self.n_running = 0
        if self._cells is not None:
            self._p.update(self._cells, advance=1)
        self._info()

    def epoch(self, epoch: int, total: int, loss: float) -> None:
        """In-process: an epoch of the current step ended."""
        if self._epochs is not None:
            self._p.update(self._epochs, completed=epoch, total=total, info=f"loss {loss:.4f}")

    def running(self, n: int) -> None:
        """Remote executors: ``n`` tasks (cells and reference models) are executing now."""
        self._remote = True
        self.n_running = n
        self._info()

    def references(self, done: int, total: int, failed: int = 0) -> None:
        """Remote executors: ``done`` of ``total`` reference models are trained (or were cached)."""
        if self._refs is not None:
            info = f"[red]failed {failed}[/red]" if failed else ""
            self._p.update(self._refs, completed=done, total=max(total, 1), info=info, visible=total > 0)

    def close(self) -> None:
        """Stop the display."""
        self._p.stop()


# -- running ----------------------------------------------------------------------------------------------------


@contextmanager
def make_executor(
    sweep: SweepConfig,
    cache_dir: str,
    *,
    backend: Backend = "inprocess",
    ray_address: str | None = None,
    ray_init: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """The executor of a backend; on Ray, connects (or starts a local Ray) and shuts down what it started.

    Args:
        sweep: the sweep (device and Ray resources).
        cache_dir: the model cache (artifacts) directory, absolute.
        backend: ``"inprocess"`` or ``"ray"`` (``ray_address`` implies ``"ray"``).
        ray_address: an existing cluster (``host:port``, ``ray://host:port`` or ``auto``); ``None`` starts Ray
            locally unless it is already initialised in this process.
        ray_init: extra ``ray.init`` keyword arguments for a local Ray (e.g. ``{"num_cpus": 2}``).
    """
    if backend == "inprocess" and ray_address is None:
        yield InProcessExecutor(cache_dir=cache_dir, device=sweep.device)
        return
    from unlearnkit.experiments.ray_backend import RayExecutor

    ex = RayExecutor(cache_dir=cache_dir, device=sweep.device, resources=sweep.ray)
    ex.connect(address=ray_address, timeout_s=sweep.ray.connect_timeout_s, **(ray_init or {}))
    try:
        yield ex
    finally:
        ex.close()


def run_sweep(
    sweep: SweepConfig,
    out_dir: str | Path | None = None,
    *,
    backend: Backend = "inprocess",
    ray_address: str | None = None,
    retry_failed: bool = False,
    progress: ProgressSink | None = None,
    ray_init: dict[str, Any] | None = None,
    max_cells: int | None = MAX_CELLS,
) -> BenchmarkResult:
    """Run (or resume) a sweep into ``out_dir``: plan → check outputs → executor → drive → reports.

    Every check happens before anything is written: the grid and every benchmark (:func:`plan_sweep`),
    that the output and artifacts directories can be written, and (on Ray) that the cluster answers.

    Args:
        sweep: from :func:`load_sweep` / :func:`parse_sweep`.
        out_dir: where ``results.db`` and the reports go (default: the config's ``out``, else ``runs/<name>``).
        backend: ``"inprocess"`` (default) or ``"ray"``.
        ray_address: run on an existing Ray cluster (implies ``backend="ray"``); needs ``artifacts``.
        retry_failed: rerun the cells stored as failed.
        progress: e.g. :class:`SweepProgress` (default: silent).
        ray_init: extra ``ray.init`` arguments for a local Ray.
        max_cells: refuse a grid of more cells than this, before anything is written (``None``: no limit).
    """
    t_start = time.perf_counter()
    on_ray = backend == "ray" or ray_address is not None
    if ray_address is not None and sweep.artifacts is None:
        raise ConfigError(
            f"{sweep.source}: a sweep on a Ray cluster needs 'artifacts:' (a directory every node can write, "
            "e.g. on a shared filesystem) for the reference-model checkpoints"
        )
    if on_ray and sweep.device.startswith("cuda") and sweep.ray.num_gpus == 0:
        raise ConfigError(f"{sweep.source}: device {sweep.device!r} on Ray needs ray.num_gpus > 0 (GPUs per task)")
    # every model x request x seed has its own original cell: refuse a huge grid before planning it
    if sweep.models is None:  # setting 3: one original CLIP cell per seed
        n_originals = len(sweep.seeds)
    else:
        n_forget = len(sweep.base.get("forget") or RunConfig().forget)
        n_originals = len(sweep.models) * n_forget * len(sweep.seeds)
    check_cell_count(n_originals, max_cells, at_least=True)
    sp = plan_sweep(sweep, device_check=not on_ray)
    check_cell_count(len(sp.cells), max_cells)
    out = check_writable(out_dir or sweep.out or Path("runs") / sweep.name, "output directory")
    cache_dir = check_writable(sweep.artifacts or default_cache_dir(), "artifacts directory")
    result = BenchmarkResult(out_dir=out, not_applicable=sp.skipped)
    progress = progress or NullProgress()
    check_unlocked(out)  # another sweep on this out: refused before Ray starts
    with make_executor(sweep, str(cache_dir), backend=backend, ray_address=ray_address, ray_init=ray_init) as ex:
        ensure_writable_dir(out)
        ensure_writable_dir(cache_dir)
        with writer_lock(out):
            store = ResultsStore(out / "results.db")
            drive(with_export_dir(sp.cells, out), store, ex, progress, result, retry_failed=retry_failed)
            result.reports = write_reports_from(store, out)
    result.wall_s = time.perf_counter() - t_start
    return result
