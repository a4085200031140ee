"""Group run records into per-scenario tables and aggregate each metric over seeds.

This is the one place that decides what a report *says*; :mod:`.tables` (markdown), :mod:`.html` and
:mod:`.plots` only decide how it looks. A table is one (scenario without its seed, model) pair; a row is
one (method, params) group inside it, aggregated over the seeds of its successful runs.

Values are read generically: a real number is a value, ``"not computed: <reason>"`` (or a
:class:`~unlearnkit.metrics.NotComputed`) is a reason, anything else (``None``, a nested dict) is
treated as missing. Metric metadata (``higher_is_better``, description) comes from the
:data:`~unlearnkit.metrics.METRICS` registry when the name is registered; unknown names are shown plainly.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from numbers import Real
from pathlib import PurePath
from typing import Any

import numpy as np
from scipy import stats as _stats

from unlearnkit.errors import UnlearnkitError
from unlearnkit.metrics import METRICS, Metric, NotComputed, is_not_computed

#: method names with a fixed place at the top of every table: the gold standard, then the starting point
RETRAIN, ORIGINAL = "retrain", "original"

#: default column order; glob patterns allowed; metrics matching none come last, sorted by name
DEFAULT_METRIC_ORDER: tuple[str, ...] = (
    "acc_retain", "acc_forget", "acc_test", "acc_forget_test", "acc_retain_test",
    "activation_distance", "js_divergence", "zrf", "mia_*", "time_s", "time_ratio_vs_retrain",
    # setting 3 (CLIP retrieval): recalls in K order, then the unsafe rates and zero-shot accuracy
    *(f"{t}_r{k}" for t in ("t2v", "v2t", "tstar_to_v_union", "vstar_to_t_union") for k in (1, 5, 10, 20)),
    "unsafe_rate_*", "zero_shot_acc",
)  # fmt: skip

#: the compact table's accuracy columns per request kind (everything else is under "all metrics")
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "class": ("acc_forget_test", "acc_retain_test", "acc_test"),
    "sample": ("acc_forget", "acc_retain", "acc_test"),
    "concept": ("tstar_to_v_union_r10", "vstar_to_t_union_r10", "unsafe_rate_tstar", "unsafe_rate_vstar",
                "t2v_r10", "v2t_r10", "zero_shot_acc"),
}  # fmt: skip
#: the headline privacy metric of the compact table: the first of these a run carries
PRIVACY_HEADLINE = ("ulira_auc", "lira_auc", "mia_efficacy", "mia_loss_lr", "mia_entropy_svc", "mia_*")
#: the compact table's cost column
TIME_COLUMN = "time_ratio_vs_retrain"
#: the forget metric per request kind (the "cannot separate methods" warning compares original and retrain on it)
FORGET_METRIC = {"class": "acc_forget_test", "sample": "acc_forget"}

#: scenario fields named in a table's title (the rest go into its caption)
TITLE_FIELDS = ("dataset", "forget")

#: degrees of freedom of the reported standard deviation (sample std over seeds)
STD_DDOF = 1

#: confidence level of the interval over seeds (Student t with n - 1 degrees of freedom)
CI_LEVEL = 0.95

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "infinity": math.inf, "-infinity": -math.inf}


# -- metric metadata --------------------------------------------------------------------------------
def metric_sort_key(name: str) -> tuple[int, str]:
    """Sort key placing ``name`` by :data:`DEFAULT_METRIC_ORDER`, unknown names last (alphabetically)."""
    for i, pattern in enumerate(DEFAULT_METRIC_ORDER):
        if fnmatch.fnmatchcase(name, pattern):
            return (i, name)
    return (len(DEFAULT_METRIC_ORDER), name)


def order_metrics(names: Iterable[str]) -> list[str]:
    """Distinct metric names in the default report order."""
    return sorted(set(names), key=metric_sort_key)


def metric_meta(name: str) -> Metric | None:
    """The registered :class:`~unlearnkit.metrics.Metric` called ``name``, or ``None`` when unknown."""
    return METRICS.get(name) if name in METRICS else None  # CLIP metrics are there once unlearnkit.concept loads


def metric_arrow(name: str) -> str:
    """``↑`` (higher is better), ``↓`` (lower is better), ``≈`` (match retrain) or ``""`` if unregistered."""
    meta = metric_meta(name)
    if meta is None:
        return ""
    return {True: "↑", False: "↓", None: "≈"}[meta.higher_is_better]


def is_gap_metric(name: str) -> bool:
    """Whether the report shows ``mean(method) − mean(retrain)`` for ``name``.

    Every accuracy (``acc_*``) and every registered metric whose goal is to match the retrained model.
    """
    from unlearnkit.metrics.epsilon_score import REFERENCE_KEYS  # figures of the references, not of a method

    if name.startswith("acc_"):
        return True
    meta = metric_meta(name)
    return meta is not None and meta.higher_is_better is None and name not in REFERENCE_KEYS


# -- values -----------------------------------------------------------------------------------------
def as_number(value: Any) -> float | None:
    """A metric value as a float, or ``None`` when it is not a number (not computed, missing, other).

    ``"nan"``/``"inf"``/``"-inf"`` strings (how report.json stores non-finite floats) count as numbers.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in _NONFINITE:
        return _NONFINITE[value.strip().lower()]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # 0-d numpy arrays and tensors
        try:
            return as_number(value.item())
        except (TypeError, ValueError, RuntimeError):
            return None
    return None


def to_jsonable(obj: Any) -> Any:
    """A strict-JSON copy of ``obj``.

    ``NotComputed`` becomes its ``"not computed: <reason>"`` string, numpy/torch scalars become Python
    numbers, tuples/sets become lists, non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"``
    (strict JSON has no NaN), and anything else unknown becomes ``str(obj)``.
    """
    if isinstance(obj, NotComputed):
        return str(obj)
    if obj is None or isinstance(obj, bool | str | int):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return [to_jsonable(v) for v in sorted(obj, key=str)]
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        try:
            return to_jsonable(obj.tolist())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(obj)


def canonical(obj: Any) -> str:
    """A stable string identity for a JSON-like value (used to group scenarios and params)."""
    return json.dumps(to_jsonable(obj), sort_keys=True)


def format_param(value: Any) -> str:
    """A short human form of a hyperparameter value."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable(value))


def format_params(params: Mapping[str, Any], keys: Iterable[str] | None = None) -> str:
    """``"lr=0.001, epochs=5"`` for ``keys`` (default: all) of ``params``; missing keys show as ``-``."""
    keys = list(params) if keys is None else list(keys)
    return ", ".join(f"{k}={format_param(params[k]) if k in params else '-'}" for k in keys)


# -- runs -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunView:
    """One run record, normalised (missing fields filled in, types checked)."""

    index: int
    record: Mapping[str, Any]
    scenario: dict[str, Any]
    model: str
    method: str
    params: dict[str, Any]
    seed: Any
    status: str
    error: str | None
    metrics: dict[str, Any]

    @property
    def ok(self) -> bool:
        """True for a run whose status is ``"ok"``."""
        return self.status == "ok"

    @property
    def scenario_key(self) -> str:
        """Identity of the scenario without its seed (seeds are aggregated)."""
        return canonical({k: v for k, v in self.scenario.items() if k != "seed"})


def _mapping(value: Any, what: str, i: int) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UnlearnkitError(f"run {i}: {what} must be a mapping, got {type(value).__name__}")
    return dict(value)


def normalize_runs(runs: Iterable[Mapping[str, Any]]) -> list[RunView]:
    """Check and normalise run records (dicts as loaded from the results store).

    A record needs a non-empty string ``method``; ``scenario``, ``params`` and ``metrics`` default to
    ``{}``, ``model`` to ``"?"``, and ``status`` to ``"failed"`` when an ``error`` is set, else ``"ok"``.

    Raises:
        UnlearnkitError: ``runs`` is not a list of mappings, or a record has no method name.
    """
    if isinstance(runs, Mapping | str | bytes):
        raise UnlearnkitError(f"runs must be a list of run records, got a {type(runs).__name__}")
    out: list[RunView] = []
    for i, rec in enumerate(runs):
        if not isinstance(rec, Mapping):
            raise UnlearnkitError(f"run {i} must be a mapping (a run record), got {type(rec).__name__}")
        method = rec.get("method")
        if not isinstance(method, str) or not method:
            raise UnlearnkitError(f"run {i} has no method name (got {method!r})")
        error = rec.get("error")
        status = rec.get("status")
        if status is None:
            status = "ok" if error is None else "failed"
        out.append(
            RunView(
                index=i, record=rec, scenario=_mapping(rec.get("scenario"), "scenario", i),
                model=str(rec.get("model") or "?"), method=method, params=_mapping(rec.get("params"), "params", i),
                seed=rec.get("seed"), status=str(status), error=None if error is None else str(error),
                metrics=_mapping(rec.get("metrics"), "metrics", i),
            )
        )  # fmt: skip
    return out


# -- aggregation ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stat:
    """One metric of one row, over the row's successful runs.

    Attributes:
        values: the numeric values, one per run that has one.
        reasons: distinct ``"not computed: ..."`` strings from the runs that have one.
        n_runs: number of successful runs in the row.
    """

    values: tuple[float, ...]
    reasons: tuple[str, ...]
    n_runs: int

    @property
    def n(self) -> int:
        """Number of runs with a numeric value."""
        return len(self.values)

    @property
    def mean(self) -> float | None:
        """Mean over runs, ``None`` when no run has a number."""
        return float(np.mean(self.values)) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (``ddof=1``) over runs, ``None`` with fewer than two values."""
        return float(np.std(self.values, ddof=STD_DDOF)) if len(self.values) > STD_DDOF else None

    @property
    def ci95(self) -> float | None:
        """Half-width of the 95% confidence interval of the mean, ``None`` with fewer than two values.

        Student t with ``n - 1`` degrees of freedom: ``t_{0.975, n-1} · std / √n`` (seeds as i.i.d. draws).
        """
        if len(self.values) < 2:
            return None
        t = float(_stats.t.ppf(0.5 + CI_LEVEL / 2, len(self.values) - 1))
        return t * float(np.std(self.values, ddof=1)) / math.sqrt(len(self.values))

    @property
    def not_computed(self) -> str:
        """``"not computed: a; b"`` merging every reason (for a value not computed in any run)."""
        parts = [r.split(":", 1)[1].strip() if ":" in r else r for r in self.reasons]
        return "not computed: " + "; ".join(p for p in parts if p) if parts else "not computed"

    def to_json(self) -> dict[str, Any] | str:
        """``{"mean", "std", "ci95", "n"[, "not_computed"]}``, or the ``"not computed: ..."`` string if no run has one.

        ``ci95`` is the half-width of the 95% confidence interval of the mean (``None`` for one value).
        """
        if not self.values:
            return self.not_computed if self.reasons else {"mean": None, "std": None, "ci95": None, "n": 0}
        out: dict[str, Any] = {
            "mean": to_jsonable(self.mean), "std": to_jsonable(self.std), "ci95": to_jsonable(self.ci95), "n": self.n,
        }  # fmt: skip
        if self.reasons:
            out["not_computed"] = list(self.reasons)
        return out


def compute_stat(runs: list[RunView], metric: str) -> Stat:
    """Aggregate ``metric`` over ``runs``."""
    values: list[float] = []
    reasons: list[str] = []
    for run in runs:
        v = run.metrics.get(metric)
        number = as_number(v)
        if number is not None:
            values.append(number)
        elif is_not_computed(v):
            reason = str(v)
            if reason not in reasons:
                reasons.append(reason)
    return Stat(tuple(values), tuple(reasons), len(runs))


@dataclass
class Row:
    """One (method, params) group of a table."""

    method: str
    params: dict[str, Any]
    label: str
    runs: list[RunView]
    failed: list[RunView]
    stats: dict[str, Stat] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``"retrain"``, ``"original"`` or ``"method"``."""
        return self.method if self.method in (RETRAIN, ORIGINAL) else "method"

    @property
    def n_seeds(self) -> int:
        """Number of successful runs (seeds) aggregated in this row."""
        return len(self.runs)

    def seeds_not_run(self, asked: Iterable[str]) -> list[str]:
        """Seeds (canonical strings) in ``asked`` with neither a successful nor a failed run in this row."""
        have = {canonical(r.seed) for r in (*self.runs, *self.failed)}
        return [s for s in asked if s not in have]

    def mean(self, metric: str) -> float | None:
        """Mean of ``metric``, ``None`` when no run has a number."""
        stat = self.stats.get(metric)
        return None if stat is None else stat.mean


@dataclass
class ScenarioTable:
    """Every method run on one scenario (seeds aggregated) with one model.

    Attributes:
        scenario: the scenario fields without ``seed``.
        model: the model name.
        rows: retrain first, then original, then the other methods sorted by name (then params).
        metrics: shown metric columns, in report order (at least one row has a number).
        dropped: metrics no row has a number for -> the reasons (``"not computed: ..."``).
        seeds_asked: the seeds every row should have (canonical strings, sorted): every seed that any run of
            the table, successful or failed, was run with. A row with fewer successful seeds is marked.
    """

    scenario: dict[str, Any]
    model: str
    rows: list[Row]
    metrics: list[str]
    dropped: dict[str, tuple[str, ...]]
    seeds_asked: tuple[str, ...] = ()

    @property
    def n_asked(self) -> int:
        """Number of seeds each row should have."""
        return len(self.seeds_asked)

    def short(self, row: Row) -> bool:
        """Whether ``row`` has fewer successful seeds than asked (failed or never run)."""
        return row.n_seeds < self.n_asked

    @property
    def title(self) -> str:
        """``"digits · forget class:3 · small_cnn"``."""
        parts = [str(self.scenario["dataset"])] if "dataset" in self.scenario else []
        if "forget" in self.scenario:
            parts.append(f"forget {self.scenario['forget']}")
        parts.append(self.model)
        return " · ".join(parts)

    @property
    def caption(self) -> str:
        """The scenario fields not in the title, and the seeds, as one line."""
        parts = [f"{k}={format_param(v)}" for k, v in self.scenario.items() if k not in TITLE_FIELDS]
        run_seeds = sorted({canonical(r.seed) for row in self.rows for r in row.runs}, key=_seed_key)
        split_seeds = sorted({canonical(r.scenario.get("seed")) for row in self.rows for r in row.runs}, key=_seed_key)
        if run_seeds:
            parts.append("seeds: " + ", ".join(map(str, run_seeds)))
        if split_seeds != run_seeds and split_seeds != ["null"]:
            parts.append("split seeds: " + ", ".join(map(str, split_seeds)))
        return " · ".join(parts)

    @property
    def retrain(self) -> Row | None:
        """The first retrain row with a successful run (the reference for gaps), if any."""
        return next((r for r in self.rows if r.kind == RETRAIN and r.runs), None)

    @property
    def failures(self) -> list[RunView]:
        """Failed runs of this table, in row order."""
        return [run for row in self.rows for run in row.failed]

    @property
    def flagged(self) -> list[tuple[str, RunView]]:
        """``(row label, run)`` of the successful runs that carry a flag (e.g. a collapsed model), in row order."""
        return [(row.label, run) for row in self.rows for run in row.runs if run.record.get("flags")]

    @property
    def kind(self) -> str:
        """``"class"``, ``"concept"`` (setting 3) or ``"sample"`` (random and other sample-level requests)."""
        forget = str(self.scenario.get("forget", ""))
        settings = {r.record.get("setting") for row in self.rows for r in (*row.runs, *row.failed)}
        if forget.startswith("concept:") or 3 in settings:
            return "concept"
        return "class" if forget.startswith("class:") else "sample"

    @property
    def retrain_by_design_absent(self) -> bool:
        """Whether this request kind has no retrained model by design (setting 3 compares with the original)."""
        return self.kind == "concept" and self.retrain is None

    def gap(self, row: Row, metric: str) -> float | None:
        """``mean(row) − mean(retrain)`` for ``metric``, ``None`` when either is unavailable."""
        ref = self.retrain
        if ref is None:
            return None
        a, b = row.mean(metric), ref.mean(metric)
        return None if a is None or b is None else a - b

    def mean_abs_gap(self, row: Row, metrics: Iterable[str]) -> float | None:
        """Mean of ``|gap|`` over ``metrics`` (those with a finite gap), ``None`` when none has one."""
        gaps = [abs(g) for g in (self.gap(row, m) for m in metrics) if g is not None and math.isfinite(g)]
        return sum(gaps) / len(gaps) if gaps else None

    def best(self, metric: str) -> set[int]:
        """Indices of the unlearning-method rows (not retrain/original) best on ``metric``.

        With a retrained model, a metric compared with it (every accuracy, every "match retrain" metric) is
        best when closest to retrain, never at its raw maximum. Without one (setting 3), and for metrics
        with a direction that are not compared with retrain (time, cost), the registered
        ``higher_is_better`` decides among the unlearned models. Empty for unregistered metrics without a
        retrain comparison, or when fewer than two methods have a finite value.
        """
        cand = {i: row.mean(metric) for i, row in enumerate(self.rows) if row.kind == "method"}
        cand = {i: m for i, m in cand.items() if m is not None and math.isfinite(m)}
        if len(cand) < 2:
            return set()
        ref = self.retrain.mean(metric) if self.retrain is not None else None
        meta = metric_meta(metric)
        if ref is not None and math.isfinite(ref) and is_gap_metric(metric):
            score = {i: -abs(m - ref) for i, m in cand.items()}
        elif meta is None or meta.higher_is_better is None:
            return set()
        else:
            score = {i: (m if meta.higher_is_better else -m) for i, m in cand.items()}
        return best_of(score)


def best_of(score: Mapping[int, float]) -> set[int]:
    """The keys with the highest score (ties within 1e-12 all kept)."""
    top = max(score.values())
    return {i for i, s in score.items() if s >= top - 1e-12}


def _seed_key(seed: str) -> tuple[int, float, str]:
    """Sort canonical seed strings numerically when they are numbers ("2" before "10")."""
    try:
        return (0, float(seed), seed)
    except ValueError:
        return (1, 0.0, seed)


def _row_order(method: str, params_key: str) -> tuple[int, str, str]:
    rank = {RETRAIN: 0, ORIGINAL: 1}.get(method, 2)
    return (rank, method, params_key)


def _labels(groups: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Method name, plus the params that differ between rows of the same method."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for method, params in groups:
        by_method.setdefault(method, []).append(params)
    labels = []
    for method, params in groups:
        variants = by_method[method]
        if len(variants) == 1:
            labels.append(method)
            continue
        if method == "audit" and "checkpoint" in params:  # audited checkpoints: the file name says which
            labels.append(f"audit ({PurePath(str(params['checkpoint'])).name})")
            continue
        keys = sorted({k for p in variants for k in p})
        differing = [k for k in keys if len({canonical(p.get(k, "\0missing")) for p in variants}) > 1]
        labels.append(f"{method} ({format_params(params, differing or keys)})")
    return labels


def aggregate(runs: Iterable[Mapping[str, Any]] | list[RunView]) -> list[ScenarioTable]:
    """Group run records into :class:`ScenarioTable` s (sorted by dataset, forget spec, model).

    Args:
        runs: run records (dicts from the results store) or already normalised :class:`RunView` s.
    """
    runs = list(runs)
    views = runs if all(isinstance(r, RunView) for r in runs) else normalize_runs(runs)
    tables: dict[tuple[str, str], dict[str, Any]] = {}
    for run in views:
        t = tables.setdefault(
            (run.scenario_key, run.model),
            {"scenario": {k: v for k, v in run.scenario.items() if k != "seed"}, "groups": {}},
        )
        g = t["groups"].setdefault((run.method, canonical(run.params)), {"params": run.params, "ok": [], "failed": []})
        g["ok" if run.ok else "failed"].append(run)

    out: list[ScenarioTable] = []
    for (_, model), t in tables.items():
        keys = sorted(t["groups"], key=lambda k: _row_order(*k))
        labels = _labels([(m, t["groups"][(m, p)]["params"]) for m, p in keys])
        rows = [
            Row(method=m, params=t["groups"][(m, p)]["params"], label=label,
                runs=t["groups"][(m, p)]["ok"], failed=t["groups"][(m, p)]["failed"])
            for (m, p), label in zip(keys, labels, strict=True)
        ]  # fmt: skip
        structured = {n for row in rows for run in row.runs for n, v in run.metrics.items() if isinstance(v, Mapping)}
        names = order_metrics(n for row in rows for run in row.runs for n in run.metrics if n not in structured)
        for row in rows:
            row.stats = {name: compute_stat(row.runs, name) for name in names if row.runs}
        shown = [n for n in names if any(row.stats[n].n for row in rows if n in row.stats)]
        dropped: dict[str, tuple[str, ...]] = {}
        for n in names:
            if n in shown:
                continue
            reasons: list[str] = []
            for row in rows:
                for r in row.stats[n].reasons if n in row.stats else ():
                    if r not in reasons:
                        reasons.append(r)
            dropped[n] = tuple(reasons) or ("not computed: no numeric value",)
        asked = tuple(sorted({canonical(r.seed) for row in rows for r in (*row.runs, *row.failed)}, key=_seed_key))
        out.append(ScenarioTable(scenario=t["scenario"], model=model, rows=rows, metrics=shown, dropped=dropped,
                                 seeds_asked=asked))  # fmt: skip

    def table_key(tb: ScenarioTable) -> tuple[str, str, str, str]:
        s = tb.scenario
        return (str(s.get("dataset", "")), str(s.get("forget", "")), tb.model, canonical(s))

    return sorted(out, key=table_key)


def default_columns(table: ScenarioTable) -> list[str]:
    """The compact table's metric columns for ``table``'s request kind (only those with a value).

    Class requests: forget/retain/test accuracy on unseen data; sample-level requests: forget/retain/test
    accuracy; then the headline privacy metric and the time ratio. Setting 3: its retrieval and unsafe
    headline metrics. The gap to retrain is a column of its own (see :func:`~.tables.summary_grid`).
    """
    shown = set(table.metrics)
    cols = [m for m in DEFAULT_COLUMNS[table.kind] if m in shown]
    if table.kind != "concept":
        privacy = next((m for p in PRIVACY_HEADLINE for m in table.metrics if fnmatch.fnmatchcase(m, p)), None)
        cols += [privacy] if privacy is not None else []
        cols += ["final_score"] if table.kind == "sample" and "final_score" in shown else []
    cols += [TIME_COLUMN] if TIME_COLUMN in shown else []
    return cols
