"""Fair hyperparameter tuning: every method gets the same trial budget, on proxy requests, never on the evaluated ones.

``unlearnkit tune CONFIG`` (:func:`unlearnkit.tune`) searches each method's declared ``search_space`` (see
:class:`~unlearnkit.methods.Method`) with Optuna's TPE sampler and median pruning:

1. **Proxy requests.** For each request kind of the config (``class``, ``random``), ``proxies`` requests that
   the benchmark does not evaluate: classes outside every evaluated class request (the same number of classes
   per request), random subsets of the same size drawn with other seeds, and seeds outside the config's
   ``seeds``. Each proxy has its own original and retrained model, from the model cache (trained once, as for
   any run: :func:`~unlearnkit.experiments.runner.run_cell`).
2. **Objective** (lower is better), per proxy, as the leaderboard ranks methods: the mean absolute gap to the
   retrained model over ``acc_forget_test``, ``acc_retain_test`` and ``acc_test`` (class requests) or
   ``acc_forget``, ``acc_retain``, ``acc_test`` (sample-level requests; ``1 - final_score`` when the config
   turns the ε score on), plus ``relearn_weight`` × the gap of the after-relearning forget accuracy when that
   weight is set; averaged over the proxies. Trials measure only what the objective needs (no MIA, LiRA,
   relearning or ensembles unless asked).
3. **Constraint.** The mean ``time_ratio_vs_retrain`` must stay at or below ``max_time_ratio`` (default 0.5:
   an unlearning method that costs more than half a retraining is not worth running). TPE is told
   (``Trial.set_constraint``) and the best trial is the best *feasible* one.
4. **Budget.** ``trials`` per method, the first being the method's defaults (so a tuning never reports worse
   than the defaults on the proxies). A pruned trial counts.
5. **Resume.** Optuna's SQLite storage (``OUT/tune.optuna.db``): a killed tuning, rerun with the same
   command, keeps every finished trial and runs only the rest (a trial cut off mid-way is marked failed
   and does not count). The unlearnkit store (``OUT/results.db``) holds the history (``tune_trials``,
   ``tune_studies``) for the report.

Outputs: ``OUT/tuned.yaml`` (the config with its ``methods:`` set to the tuned entries) and, unless
``compare=False``, the evaluated requests run with the defaults and with the tuned parameters into
``OUT/results.db``, so ``OUT/report.md`` has the trials and a "tuned vs defaults" leaderboard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearnkit.engine import config_hash
from unlearnkit.errors import ConfigError, UnlearnkitError
from unlearnkit.experiments.config import ConceptRunConfig, RunConfig
from unlearnkit.experiments.progress import NullProgress
from unlearnkit.experiments.runner import (
    Cell,
    InProcessExecutor,
    check_locations,
    ensure_writable_dir,
    plan,
    run_benchmark,
    write_reports_from,
)
from unlearnkit.experiments.store import ResultsStore, writer_lock
from unlearnkit.methods import METHODS, create_method, search_space_problems
from unlearnkit.scenario import ForgetRequest

#: the leaderboard's accuracies, per request level (their mean |gap| to retrain is the objective)
CLASS_METRICS = ("acc_forget_test", "acc_retain_test", "acc_test")
SAMPLE_METRICS = ("acc_forget", "acc_retain", "acc_test")
RELEARN_METRIC = {"class": "relearn_acc_forget_test", "sample": "relearn_rtt_acc"}
TIME_RATIO = "time_ratio_vs_retrain"
#: the objective of a trial whose run failed (a diverged model): the worst gap an accuracy can have
FAILED_VALUE = 1.0
#: Optuna's storage file in the output directory
OPTUNA_DB = "tune.optuna.db"
TUNED_YAML = "tuned.yaml"
#: proxy seeds start here (and skip the config's seeds)
PROXY_SEED_BASE = 1000
_CLASS_LEVEL = ("class", "subclass", "group")


@dataclass(frozen=True)
class TuneSettings:
    """How a tuning runs (the same for every method: a fair comparison).

    Attributes:
        trials: trials per method (the defaults are the first).
        proxies: proxy requests per request kind of the config.
        max_time_ratio: the constraint on the mean ``time_ratio_vs_retrain``.
        relearn_weight: weight of the after-relearning forget-accuracy gap in the objective (0: off; on, every
            trial runs the config's relearning attacks).
        seed: seeds the sampler and the choice of proxy classes.
        startup_trials: at most this many trials drawn at random (and at most a third of ``trials``) before TPE
            models the results.
    """

    trials: int = 30
    proxies: int = 2
    max_time_ratio: float = 0.5
    relearn_weight: float = 0.0
    seed: int = 0
    startup_trials: int = 10

    def check(self) -> None:
        """Refuse impossible settings in one line."""
        for name, v, lo in (("trials", self.trials, 1), ("proxies", self.proxies, 1), ("seed", self.seed, 0),
                            ("startup_trials", self.startup_trials, 0)):  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"tune: {name} must be an integer >= {lo}, got {v!r}")
        for name, v in (("max_time_ratio", self.max_time_ratio), ("relearn_weight", self.relearn_weight)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"tune: {name} must be a finite number >= 0, got {v!r}")
        if self.max_time_ratio == 0:
            raise ConfigError("tune: max_time_ratio must be > 0 (a method always takes some time)")


@dataclass
class TuneResult:
    """What a tuning did."""

    out_dir: Path
    #: method -> tuned hyperparameters (only those of its search space), and their proxy objective
    best: dict[str, dict[str, Any]] = field(default_factory=dict)
    best_value: dict[str, float | None] = field(default_factory=dict)  # None: no feasible finished trial
    default_value: dict[str, float | None] = field(default_factory=dict)
    #: method -> trials run by this call (a resumed tuning runs only the missing ones)
    ran: dict[str, int] = field(default_factory=dict)
    not_tuned: list[str] = field(default_factory=list)
    proxies: list[tuple[str, int]] = field(default_factory=list)
    tuned_yaml: Path | None = None
    reports: dict[str, Path] = field(default_factory=dict)
    wall_s: float = 0.0
    tune_wall_s: float = 0.0


# -- proxies ---------------------------------------------------------------------------------------------------


def request_level(req: ForgetRequest) -> str:
    """``"class"`` for class-level requests, ``"sample"`` for the others (as the leaderboard ranks them)."""
    return "class" if req.kind in _CLASS_LEVEL else "sample"


def proxy_requests(cfg: RunConfig, num_classes: int, n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` proxy ``(forget spec, seed)`` pairs per request kind of ``cfg``, none of them evaluated by ``cfg``.

    Class requests: ``k``-class requests (``k`` of the config's first class request) drawn from the classes no
    evaluated class request names; sample requests (``random:``): the same size, other seeds. Proxy seeds are
    ``1000, 1001, ...`` minus the config's seeds. Other request kinds (subclass, indices, group) have no proxy.
    """
    requests = [ForgetRequest.parse(f) for f in cfg.forget]
    evaluated = {c for r in requests if r.kind == "class" for c in r.classes}
    seeds = [s for s in range(PROXY_SEED_BASE, PROXY_SEED_BASE + n + len(cfg.seeds)) if s not in cfg.seeds][:n]
    rng = random.Random(seed)
    out: list[tuple[str, int]] = []
    for kind in dict.fromkeys(r.kind for r in requests):
        first = next(r for r in requests if r.kind == kind)
        if kind == "class":
            free = [c for c in range(num_classes) if c not in evaluated]
            k = len(first.classes)
            if len(free) < k:
                raise ConfigError(
                    f"tune: no proxy class request is left: the config evaluates classes {sorted(evaluated)} of "
                    f"{num_classes}, and a proxy needs {k} other class(es)"
                )
            pool: list[int] = []
            for s in seeds:
                if len(pool) < k:
                    pool = rng.sample(free, len(free))  # every free class once before any repeats
                pick, pool = sorted(pool[:k]), pool[k:]
                out.append((str(ForgetRequest("class", classes=tuple(pick))), s))
        elif kind == "random":
            out.extend((str(first), s) for s in seeds)  # the same size; another seed draws another subset
        else:
            raise ConfigError(
                f"tune: {kind} requests ({first}) have no proxy request; tune a config of class and random requests"
            )
    return out


# -- checks ----------------------------------------------------------------------------------------------------


def tunable_methods(cfg: RunConfig, names: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """``(methods to tune, setting-1 methods skipped because their space is empty)``; bad names raise one line.

    ``names=None`` tunes the config's methods (``all``: every setting-1 method). A method must be a registered
    setting-1 method with a declared, valid ``search_space``; one whose space is empty is tuned only when not
    named explicitly (then it is skipped and listed).
    """
    explicit = names is not None
    if names is None:
        specs = cfg.method_specs()
        names = [n for n in METHODS.list() if METHODS.get(n).setting == 1] if specs is None else [s.name for s in specs]
    if not names:
        raise ConfigError("tune: no methods selected")
    if len(set(names)) != len(names):
        raise ConfigError(f"tune: a method is listed twice in {list(names)}")
    chosen, skipped = [], []
    for n in names:
        cls = METHODS.get(n)  # an unknown name: one line with a suggestion
        if cls.setting != 1 or cls.modality != "classifier":
            raise ConfigError(f"tune: method {n!r} is a setting-{cls.setting} method; tune serves setting-1 methods")
        problems = search_space_problems(cls)
        if problems:
            raise ConfigError(f"tune: {problems[0]}")
        if cls.search_space:
            chosen.append(n)
        elif explicit and n != "retrain":
            raise ConfigError(f"tune: method {n!r} has nothing to tune (its search_space is empty)")
        else:
            skipped.append(n)
    if not chosen:
        raise ConfigError(f"tune: none of {list(names)} has hyperparameters to tune")
    return chosen, skipped


# -- one trial ---------------------------------------------------------------------------------------------------


def _trial_config(cfg: RunConfig, forget: str, seed: int, method: str, settings: TuneSettings) -> RunConfig:
    """The config of one proxy run: that request and seed, the method, only the metrics the objective needs."""
    level = request_level(ForgetRequest.parse(forget))
    metrics = [*(CLASS_METRICS if level == "class" else SAMPLE_METRICS), TIME_RATIO]
    ensemble = cfg.ensemble_n if level == "sample" and cfg.ensemble_n else 0
    if ensemble:
        metrics.append("final_score")
    relearn = settings.relearn_weight > 0 and cfg.relearn.enabled
    if relearn:
        metrics.append(RELEARN_METRIC[level])
    return cfg.replace(
        forget=[forget], seeds=[seed], methods=[method], metrics=metrics, lira_shadows=0, ensemble_n=ensemble,
        relearn=cfg.relearn.model_dump() if relearn else False,
    )  # fmt: skip


@dataclass
class _Proxy:
    forget: str
    seed: int
    level: str
    template: Cell  # the method's cell at its defaults
    retrain: Cell
    reference: dict[str, float] = field(default_factory=dict)  # retrain's metrics


def _cells_for(cfg: RunConfig, method: str, proxies: list[tuple[str, int]], settings: TuneSettings) -> list[_Proxy]:
    """The proxy cells of ``method``: the proxies of the request kinds it serves (a class-only method is tuned on
    the class proxies), each planned (so validated) now."""
    cls = METHODS.get(method)
    served = [(f, s) for f, s in proxies if cls.unsupported_reason(ForgetRequest.parse(f)) is None]
    if not served:
        raise ConfigError(
            f"tune: method {method!r} serves none of the proxy requests ({', '.join(f for f, _ in proxies)})"
        )
    out = []
    for forget, seed in served:
        cells, _ = plan(_trial_config(cfg, forget, seed, method, settings))
        mine = [c for c in cells if c.method == method]
        if not mine:
            raise ConfigError(f"tune: method {method!r} cannot serve the proxy request {forget}")
        retrain = next(c for c in cells if c.method == "retrain")
        out.append(_Proxy(forget, seed, request_level(ForgetRequest.parse(forget)), mine[0], retrain))
    return out


def _with_params(cell: Cell, params: dict[str, Any]) -> Cell:
    c = dataclasses.replace(cell, params={**cell.params, **params}, key="")
    c.key = config_hash(c.identity())
    return c


def proxy_score(level: str, metrics: dict[str, Any], reference: dict[str, Any], relearn_weight: float,
                ensemble: bool) -> float | None:  # fmt: skip
    """The objective of one proxy run (lower is better); ``None`` when a metric it needs is missing."""

    def num(d: dict[str, Any], k: str) -> float | None:
        v = d.get(k)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None

    if level == "sample" and ensemble:
        fs = num(metrics, "final_score")
        if fs is None:
            return None
        score = 1.0 - fs
    else:
        names = CLASS_METRICS if level == "class" else SAMPLE_METRICS
        gaps = [(num(metrics, m), num(reference, m)) for m in names]
        if any(a is None or b is None for a, b in gaps):
            return None
        score = sum(abs(a - b) for a, b in gaps) / len(gaps)  # type: ignore[operator]
    if relearn_weight > 0:
        a, b = num(metrics, RELEARN_METRIC[level]), num(reference, RELEARN_METRIC[level])
        if a is None or b is None:
            return None
        score += relearn_weight * abs(a - b)
    return score


# -- the driver ----------------------------------------------------------------------------------------------------


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UnlearnkitError("unlearnkit tune needs Optuna: pip install 'unlearnkit[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _fingerprint(cfg: RunConfig, method: str, proxies: list[tuple[str, int]], settings: TuneSettings) -> str:
    """What a study's trials depend on: a rerun with other settings must not continue it."""
    base = cfg.flat()
    for k in ("methods", "forget", "seeds", "metrics", "cache_dir", "name"):
        base.pop(k, None)
    ident = {"config": base, "method": method, "proxies": proxies,
             **{k: v for k, v in dataclasses.asdict(settings).items() if k != "trials"}}  # fmt: skip
    return config_hash(ident)


def _study_seed(seed: int, method: str) -> int:
    return int(hashlib.sha256(f"{seed}:{method}".encode()).hexdigest()[:8], 16)


TrialCallback = Callable[[str, int, str, "float | None", "float | None"], None]


def tune(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    methods: Sequence[str] | None = None,
    settings: TuneSettings | None = None,
    compare: bool = True,
    executor: Any = None,
    on_trial: TrialCallback | None = None,
) -> TuneResult:
    """Tune every method of ``cfg`` (or ``methods``) on proxy requests; write ``tuned.yaml`` and the reports.

    Args:
        cfg: a setting-1 run config (its requests and seeds are the evaluated ones: never tuned on).
        out_dir: where ``tune.optuna.db``, ``results.db``, ``tuned.yaml`` and the reports go; rerunning the
            same command resumes.
        methods: the methods to tune (default: the config's, ``all`` = every setting-1 method with a space).
        settings: trials, proxies, the time constraint (default :class:`TuneSettings`).
        compare: also run the evaluated requests with the defaults and the tuned parameters (the report's
            "tuned vs defaults" leaderboard).
        executor: runs the proxy cells (default in-process; a Ray executor runs a trial's proxies in parallel).
        on_trial: called after each trial with ``(method, number, state, value, best so far)``.
    """
    t0 = time.perf_counter()
    settings = settings or TuneSettings()
    settings.check()
    if isinstance(cfg, ConceptRunConfig):
        raise ConfigError("tune serves setting-1 (classifier) configs, not a setting-3 config")
    names, skipped = tunable_methods(cfg, methods)
    optuna = _optuna()
    plan(cfg.replace(methods=["retrain"]))  # validates the config and the evaluated requests
    from unlearnkit.experiments.runner import _bundle

    bundle = _bundle(cfg.dataset, cfg.data_root, cfg.download)
    proxies = proxy_requests(cfg, bundle.num_classes, settings.proxies, settings.seed)
    per_method = {n: _cells_for(cfg, n, proxies, settings) for n in names}  # every proxy cell planned up front
    check_locations(out_dir, cfg.cache_dir)
    out = ensure_writable_dir(out_dir)
    result = TuneResult(out_dir=out, not_tuned=skipped, proxies=proxies)
    executor = executor or InProcessExecutor(cache_dir=cfg.cache_dir, device=cfg.device)
    storage = f"sqlite:///{(out / OPTUNA_DB).resolve()}"
    with writer_lock(out):
        store = ResultsStore(out / "results.db")
        for name in names:
            _tune_method(optuna, cfg, name, per_method[name], settings, storage, store, executor, result, on_trial)
    result.tune_wall_s = time.perf_counter() - t0
    result.tuned_yaml = write_tuned_yaml(cfg, result.best, out / TUNED_YAML, settings, proxies)
    if compare:
        defaults = cfg.replace(methods=names)
        tuned = cfg.replace(methods={n: result.best[n] for n in names})
        run_benchmark(defaults, out, max_cells=None)
        result.reports = run_benchmark(tuned, out, max_cells=None).reports
    else:
        with writer_lock(out):
            result.reports = write_reports_from(ResultsStore(out / "results.db"), out)
    result.wall_s = time.perf_counter() - t0
    return result


def _tune_method(
    optuna: Any, cfg: RunConfig, name: str, proxies: list[_Proxy], settings: TuneSettings, storage: str,
    store: ResultsStore, executor: Any, result: TuneResult, on_trial: TrialCallback | None,
) -> None:  # fmt: skip
    cls = METHODS.get(name)
    space = dict(cls.search_space or {})
    ensemble = bool(cfg.ensemble_n)
    defaults = create_method(name).get_params()
    fingerprint = _fingerprint(cfg, name, [(p.forget, p.seed) for p in proxies], settings)
    study_name = f"{name}-{fingerprint[:12]}"
    study = optuna.create_study(
        study_name=study_name, storage=storage, load_if_exists=True, direction="minimize",
        sampler=optuna.samplers.TPESampler(
            seed=_study_seed(settings.seed, name),
            n_startup_trials=min(settings.startup_trials, max(2, settings.trials // 3)),  # a small budget: TPE too
        ),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
    )  # fmt: skip
    states = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False):  # a trial cut off by a kill: failed, not counted, not repeated
        if t.state in (states.RUNNING, states.WAITING) and t.params:
            study._storage.set_trial_state_values(t._trial_id, state=states.FAIL)
    done = [t for t in study.get_trials(deepcopy=False) if t.state in (states.COMPLETE, states.PRUNED)]
    if not study.get_trials(deepcopy=False):
        first = {k: defaults[k] for k in space if _inside(space[k], defaults[k])}
        study.enqueue_trial(first, user_attrs={"defaults": True})
    about = {"settings": dataclasses.asdict(settings), "space": {k: str(v) for k, v in space.items()},
             "defaults": defaults, "proxies": [[p.forget, p.seed] for p in proxies]}  # fmt: skip
    store.put_study(study_name, name, about)

    # the retrained model's metrics on each proxy (the objective's reference), from the cached model
    for p in proxies:
        rec = next(iter(executor.map([p.retrain], NullProgress())))
        if not rec.ok:
            raise UnlearnkitError(f"tune: the retrained model of proxy {p.forget} seed {p.seed} failed: {rec.error}")
        p.reference = dict(rec.metrics)

    def objective(trial: Any) -> float:
        # the defaults trial leaves a default the space cannot hold (ssd's request-dependent α: None) unset
        keys = [k for k in space if not trial.user_attrs.get("defaults") or _inside(space[k], defaults[k])]
        params = {k: space[k].suggest(trial, k) for k in keys}
        cells = [_with_params(p.template, params) for p in proxies]
        scores: list[float] = []
        ratios: list[float] = []
        per_proxy: list[dict[str, Any]] = []
        records = iter(executor.map(cells, NullProgress()))
        for step, p in enumerate(proxies):
            try:
                rec = next(records)
            except UnlearnkitError as e:  # the method refuses this draw (e.g. k above the model's layers)
                trial.set_user_attr("error", str(e))
                trial.set_user_attr("time_ratio", math.inf)
                trial.set_constraint("time_ratio", 1e6)
                return FAILED_VALUE
            ratio = rec.metrics.get(TIME_RATIO) if rec.ok else None
            score = (
                proxy_score(p.level, rec.metrics, p.reference, settings.relearn_weight, ensemble) if rec.ok else None
            )
            per_proxy.append({"forget": p.forget, "seed": p.seed, "score": score, "error": rec.error,
                              "time_ratio": ratio if isinstance(ratio, float) else None,
                              "resolved": rec.config.get("resolved_params")})  # fmt: skip
            scores.append(FAILED_VALUE if score is None else score)
            if isinstance(ratio, int | float) and math.isfinite(ratio):
                ratios.append(float(ratio))
            trial.set_user_attr("proxies", per_proxy)
            trial.report(sum(scores) / len(scores), step)
            if step < len(proxies) - 1 and trial.should_prune():
                trial.set_user_attr("time_ratio", sum(ratios) / len(ratios) if ratios else math.inf)
                raise optuna.TrialPruned()
        ratio = sum(ratios) / len(ratios) if ratios else math.inf
        trial.set_user_attr("time_ratio", ratio)
        trial.set_constraint("time_ratio", min(ratio, 1e6) - settings.max_time_ratio)  # TPE: feasible when <= 0
        return sum(scores) / len(scores)

    def record(study: Any, trial: Any) -> None:
        steps = trial.intermediate_values
        value = trial.value if trial.state == states.COMPLETE else (steps[max(steps)] if steps else None)
        info = {"time_ratio": trial.user_attrs.get("time_ratio"), "proxies": trial.user_attrs.get("proxies"),
                "defaults": bool(trial.user_attrs.get("defaults")),
                "feasible": trial.user_attrs.get("time_ratio", math.inf) <= settings.max_time_ratio}  # fmt: skip
        store.put_trial(study_name, trial.number, name, trial.state.name, value, trial.params, info)
        result.ran[name] = result.ran.get(name, 0) + 1
        if on_trial is not None:
            best = _best(study, settings, states)
            on_trial(name, trial.number, trial.state.name, value, None if best is None else best.value)

    remaining = settings.trials - len(done)
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, callbacks=[record])
    best = _best(study, settings, states)
    trials = study.get_trials(deepcopy=False)
    first = next((t for t in trials if t.user_attrs.get("defaults") and t.state == states.COMPLETE), None)
    result.default_value[name] = None if first is None else first.value
    result.best[name] = _plain(dict(best.params)) if best is not None else {}  # as tuned.yaml writes them
    result.best_value[name] = best.value if best is not None else None
    importance: dict[str, float] = {}
    try:
        with warnings.catch_warnings():  # "some regimes have less than 2 trials": the chart says it is an estimate
            warnings.simplefilter("ignore", UserWarning)
            importance = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):  # too few finished trials, or one value only
        pass
    store.put_study(study_name, name, {
        **about,
        "best_params": result.best[name], "tuned_params": {**defaults, **result.best[name]},
        "best_value": best.value if best is not None else None, "best_number": best.number if best else None,
        "default_value": result.default_value[name], "importance": importance,
        "best_feasible": bool(best is not None and best.user_attrs.get("time_ratio", math.inf)
                              <= settings.max_time_ratio),
    })  # fmt: skip


def _inside(dim: Any, value: Any) -> bool:
    from unlearnkit.methods import Choice

    if isinstance(dim, Choice):
        return value in dim.values
    return isinstance(value, int | float) and not isinstance(value, bool) and dim.low <= value <= dim.high


def _best(study: Any, settings: TuneSettings, states: Any) -> Any:
    """The complete trial with the lowest objective among those within the time constraint (else among all)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == states.COMPLETE and t.value is not None]
    feasible = [t for t in complete if t.user_attrs.get("time_ratio", math.inf) <= settings.max_time_ratio]
    pool = feasible or complete
    return min(pool, key=lambda t: (t.value, t.number)) if pool else None


def write_tuned_yaml(
    cfg: RunConfig, best: dict[str, dict[str, Any]], path: Path, settings: TuneSettings, proxies: list[tuple[str, int]]
) -> Path:
    """Write the run config with ``methods:`` set to the tuned entries (usable by ``unlearnkit run --config``)."""
    import yaml

    data = cfg.model_dump(mode="json")
    data["name"] = f"{cfg.name}-tuned"
    data["methods"] = {n: _plain(p) for n, p in best.items()}
    head = (
        f"# Tuned by unlearnkit tune: {settings.trials} trials per method (TPE, median pruning), objective = mean\n"
        f"# |gap| to retrain on proxy requests {', '.join(f'{f} seed {s}' for f, s in proxies)} (never the\n"
        f"# evaluated ones), time_ratio_vs_retrain <= {settings.max_time_ratio}. Each entry under methods: can be\n"
        "# copied into any run config's methods mapping; parameters not listed keep their defaults.\n"
    )
    path.write_text(head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return path


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        if isinstance(v, float):
            v = float(f"{v:.4g}") if v != 0 else 0.0
        out[k] = v
    return out


def tuned_params_json(best: dict[str, dict[str, Any]]) -> str:
    """The tuned entries as JSON (for scripts)."""
    return json.dumps({n: _plain(p) for n, p in best.items()}, indent=1)
