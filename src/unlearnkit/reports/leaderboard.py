"""The leaderboard section: which method to use, at a glance, one table per (dataset, model, request kind).

Every ranking is against the retrained model of the same scenario (the gold standard), aggregated the
way the scenario tables are (``mean(method) − mean(retrain)`` over seeds, per scenario), then averaged
over the scenarios of the kind (e.g. ``class:1``, ``class:3``, ``class:7``):

* **class requests** — ranked by the mean absolute gap to retrain over ``acc_forget_test``,
  ``acc_retain_test`` and ``acc_test`` (0 is ideal: the method behaves like retraining on unseen data of
  the forgotten and the kept classes);
* **random (and other sample-level) requests** — ranked by the NeurIPS-2023 ``final_score`` (higher is
  better) when the runs carry a metric of that name; otherwise the table says so
  (``not computed: no final_score in these runs``) and ranks by the mean absolute gap to retrain over
  ``acc_forget``, ``acc_retain`` and ``acc_test``, labelled as the fallback it is.

Each table also shows the signed gaps, the cost ratio to retraining (``time_ratio_vs_retrain``, mean over
runs) and how many runs each row aggregates. ``retrain`` is the reference (not ranked); ``original`` (no
unlearning) is ranked like a method, as the baseline every method should beat.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from unlearnkit.reports._aggregate import ORIGINAL, RETRAIN, ScenarioTable, Stat, aggregate, as_number, canonical
from unlearnkit.reports._section import Section, register_section
from unlearnkit.reports.html import html_table
from unlearnkit.reports.tables import format_gap, format_mean_std, format_number, markdown_table

#: gap metrics per ranking (the accuracies whose distance to retrain is averaged)
CLASS_GAP_METRICS = ("acc_forget_test", "acc_retain_test", "acc_test")
SAMPLE_GAP_METRICS = ("acc_forget", "acc_retain", "acc_test")
FINAL_SCORE = "final_score"
TIME_RATIO = "time_ratio_vs_retrain"
NO_FINAL_SCORE = f"not computed: no {FINAL_SCORE} in these runs"
#: forget accuracy after the relearning attack, per request kind (a column when the runs carry it)
RELEARN_AFTER = {"class": "relearn_acc_forget_test", "sample": "relearn_rtt_acc"}
RELEARN_HEADER = "after relearning (gap to retrain)"


def request_kind(scenario: Mapping[str, Any]) -> str:
    """``"class"`` for ``forget: class:3``, ``"random"`` for ``random:0.1``, ... (``"?"`` if unknown)."""
    forget = str(scenario.get("forget", ""))
    return forget.split(":", 1)[0] if ":" in forget else (forget or "?")


@dataclass
class _Entry:
    """One (method, params) across the scenarios of a leaderboard."""

    method: str
    label: str
    gaps: dict[str, list[float]] = field(default_factory=dict)  # metric -> per-scenario gap
    scores: list[float] = field(default_factory=list)  # per-scenario mean |gap|
    final: list[float] = field(default_factory=list)  # per-scenario mean final_score
    time_ratio: list[float] = field(default_factory=list)
    relearn: list[float] = field(default_factory=list)  # per-scenario mean after-attack forget accuracy
    relearn_gap: list[float] = field(default_factory=list)  # ... minus retrain's
    seed_scores: dict[str, list[float]] = field(default_factory=dict)  # seed -> per-scenario run |gap| means
    seed_final: dict[str, list[float]] = field(default_factory=dict)  # seed -> per-scenario final_score
    n_ok: int = 0
    n_failed: int = 0


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def _collect(
    tables: list[ScenarioTable], gap_metrics: tuple[str, ...], relearn_metric: str | None = None
) -> tuple[list[_Entry], _Entry | None]:
    entries: dict[tuple[str, str], _Entry] = {}
    reference: _Entry | None = None
    for t in tables:
        for row in t.rows:
            key = (row.method, canonical(row.params))
            if row.kind == RETRAIN:
                reference = reference or _Entry(row.method, row.label)
                e = reference
            else:
                e = entries.setdefault(key, _Entry(row.method, row.label))
            e.n_ok += row.n_seeds
            e.n_failed += len(row.failed)
            if not row.runs:
                continue
            gaps = {m: t.gap(row, m) for m in gap_metrics}
            for m, g in gaps.items():
                if g is not None:
                    e.gaps.setdefault(m, []).append(g)
            if gaps and all(g is not None for g in gaps.values()):
                e.scores.append(sum(abs(g) for g in gaps.values()) / len(gaps))  # type: ignore[arg-type]
            ref_means = {m: t.retrain.mean(m) if t.retrain is not None else None for m in gap_metrics}
            for run in row.runs:
                vals = {m: as_number(run.metrics.get(m)) for m in gap_metrics}
                run_gaps = [v - r for m, v in vals.items() if v is not None and (r := ref_means[m]) is not None]
                if len(run_gaps) == len(gap_metrics) and gap_metrics:
                    score = sum(abs(g) for g in run_gaps) / len(run_gaps)
                    e.seed_scores.setdefault(canonical(run.seed), []).append(score)
                final = as_number(run.metrics.get(FINAL_SCORE))
                if final is not None:
                    e.seed_final.setdefault(canonical(run.seed), []).append(final)
            fs = row.mean(FINAL_SCORE)
            if fs is not None:
                e.final.append(fs)
            tr = row.mean(TIME_RATIO)
            if tr is not None and row.kind != ORIGINAL:  # the original's "time" is its training, not unlearning
                e.time_ratio.append(tr)
            after = row.mean(relearn_metric) if relearn_metric else None
            if after is not None:
                e.relearn.append(after)
                gap = t.gap(row, relearn_metric)  # type: ignore[arg-type]
                if gap is not None:
                    e.relearn_gap.append(gap)
    return list(entries.values()), reference


def _relearn_cell(e: _Entry, is_ref: bool) -> str | None:
    after, gap = _mean(e.relearn), _mean(e.relearn_gap)
    if after is None:
        return None
    return format_number(after) if is_ref or gap is None else f"{format_number(after)} ({format_gap(gap)})"


def _runs_text(e: _Entry) -> str:
    return f"{e.n_ok} (+{e.n_failed} failed)" if e.n_failed else str(e.n_ok)


def _fmt(v: float | None, gap: bool = False) -> str | None:
    if v is None:
        return None
    return format_gap(v) if gap else format_number(v)


def _score(e: _Entry, by_final: bool) -> float | None:
    return _mean(e.final) if by_final else _mean(e.scores)


def _ci(e: _Entry, by_final: bool) -> float | None:
    """Half-width of the 95% CI over seeds of the ranked score (each seed: its score averaged over the
    scenarios), ``None`` with fewer than two seeds."""
    per_seed = [_mean(v) for v in (e.seed_final if by_final else e.seed_scores).values()]
    values = tuple(v for v in per_seed if v is not None)
    return Stat(values, (), len(values)).ci95


#: scores closer than this print the same and tie even without a CI
TIE_ATOL = 5e-4


def tied(a: float, ci_a: float | None, b: float, ci_b: float | None) -> bool:
    """Whether two ranked scores cannot be told apart: they differ by at most the larger 95% CI
    half-width over seeds, or by less than :data:`TIE_ATOL` (they print the same)."""
    return abs(a - b) <= max(ci_a or 0.0, ci_b or 0.0, TIE_ATOL)


def _ranks(entries: list[_Entry], by_final: bool) -> dict[int, tuple[int, bool]]:
    """``id(entry) -> (rank, tied)`` for the scored entries (already sorted best first); tied entries share
    the rank of the first of their group (1, 2=, 2=, 4)."""
    out: dict[int, tuple[int, bool]] = {}
    prev: _Entry | None = None
    for pos, e in enumerate(entries, 1):
        score = _score(e, by_final)
        if score is None:
            continue
        if prev is not None and tied(_score(prev, by_final), _ci(prev, by_final), score, _ci(e, by_final)):  # type: ignore[arg-type]
            rank = out[id(prev)][0]
            out[id(prev)] = (rank, True)
            out[id(e)] = (rank, True)
        else:
            out[id(e)] = (pos, False)
        prev = e
    return out


def _score_cell(e: _Entry, by_final: bool) -> str | None:
    score = _score(e, by_final)
    if score is None:
        return None
    return format_mean_std(score, _ci(e, by_final))


def _sort_key(e: _Entry, by_final: bool) -> tuple[int, float, float]:
    """Scored rows first (best first: highest final score or smallest gap), ties broken by the time ratio."""
    score = _score(e, by_final)
    if score is None:
        return (1, 0.0, 0.0)
    tr = _mean(e.time_ratio)
    return (0, -score if by_final else score, tr if tr is not None else math.inf)


@dataclass
class Board:
    """One leaderboard table (a dataset, a model, a request kind)."""

    title: str
    note: str
    ranking: str
    headers: list[str]
    rows: list[list[Any]]
    data: dict[str, Any]


def build_boards(runs: list[Mapping[str, Any]]) -> list[Board]:
    """The leaderboard tables for ``runs`` (kinds without a successful retrain run are skipped)."""
    groups: dict[tuple[str, str, str], list[ScenarioTable]] = {}
    for t in aggregate(runs):
        if t.retrain is None:
            continue
        groups.setdefault((str(t.scenario.get("dataset", "?")), t.model, request_kind(t.scenario)), []).append(t)
    boards = []
    for (dataset, model, kind), tables in sorted(groups.items()):
        class_like = kind == "class"
        gap_metrics = CLASS_GAP_METRICS if class_like else SAMPLE_GAP_METRICS
        relearn_metric = RELEARN_AFTER["class" if class_like else "sample"]
        entries, reference = _collect(tables, gap_metrics, relearn_metric)
        show_relearn = any(e.relearn for e in [*entries, *([reference] if reference else [])])
        by_final = not class_like and any(e.final for e in entries)
        if class_like:
            ranking = f"mean |Δ| vs retrain over {', '.join(gap_metrics)} (lower is better)"
            note = ""
        elif by_final:
            ranking = f"{FINAL_SCORE} (NeurIPS-2023 forget quality × utility; higher is better)"
            note = ""
        else:
            ranking = f"fallback: mean |Δ| vs retrain over {', '.join(gap_metrics)} (lower is better)"
            note = f"final score: {NO_FINAL_SCORE}; ranked by the fallback below."

        ranked = sorted(entries, key=lambda e: _sort_key(e, by_final))
        headers = ["rank", "method"]
        headers += [f"{FINAL_SCORE} ± CI", "mean |Δ|"] if by_final else ["mean |Δ| ± CI"]
        headers += [f"Δ {m}" for m in gap_metrics] + ([RELEARN_HEADER] if show_relearn else [])
        headers += [TIME_RATIO, "runs"]
        rows, payload = [], []
        listed = ([reference] if reference is not None else []) + ranked
        ranks = _ranks(ranked, by_final)
        for e in listed:
            is_ref = e is reference
            rank, tie = ranks.get(id(e), (None, False)) if not is_ref else (None, False)
            label = (
                f"{e.label} (reference)"
                if is_ref
                else (f"{e.label} (no unlearning)" if e.method == ORIGINAL else e.label)
            )
            row: list[Any] = ["—" if rank is None else f"{rank}{'=' if tie else ''}", label]
            if by_final:
                row += [_score_cell(e, True), _fmt(_mean(e.scores))]
            else:
                row += [_score_cell(e, False)]
            row += [_fmt(_mean(e.gaps.get(m, [])), gap=True) for m in gap_metrics]
            row += [_relearn_cell(e, is_ref)] if show_relearn else []
            time_cell = "1.000" if is_ref else ("—" if e.method == ORIGINAL else _fmt(_mean(e.time_ratio)))
            row += [time_cell, _runs_text(e)]
            rows.append([("n/c" if v is None else v) for v in row])
            payload.append({
                "rank": rank, "tied": tie, "method": e.method, "label": e.label,
                "final_score": _mean(e.final), "mean_abs_gap": _mean(e.scores), "ci95": _ci(e, by_final),
                "gaps": {m: _mean(e.gaps.get(m, [])) for m in gap_metrics},
                "time_ratio_vs_retrain": 1.0 if is_ref else _mean(e.time_ratio), "runs": e.n_ok, "failed": e.n_failed,
                "after_relearning": _mean(e.relearn), "after_relearning_gap": None if is_ref else _mean(e.relearn_gap),
            })  # fmt: skip
        forgets = sorted({str(t.scenario.get("forget")) for t in tables})
        title = f"{dataset} · {model} · {kind} requests ({', '.join(forgets)})"
        data = {"dataset": dataset, "model": model, "kind": kind, "forget": forgets, "ranking": ranking,
                "final_score": None if by_final or class_like else NO_FINAL_SCORE, "rows": payload}  # fmt: skip
        boards.append(Board(title, note, ranking, headers, rows, data))
    return boards


@register_section("leaderboard")
def leaderboard_section(runs: list[Mapping[str, Any]]) -> Section | None:
    """The leaderboard :class:`Section` (``None`` when no scenario has a retrain run to rank against)."""
    boards = build_boards(runs)
    if not boards:
        return None
    intro = (
        "Methods ranked against retraining from scratch. Δ = mean(method) − mean(retrain) per scenario, "
        "averaged over the scenarios of the kind; ± CI: half-width of the 95% confidence interval over seeds "
        "(several seeds only); rank n=: tied, the scores differ by less than their CI (or print the same); "
        "time ratio = unlearning time ÷ retraining time."
    )
    md, hl = [intro], [f"<p>{html.escape(intro)}</p>"]
    for b in boards:
        md += ["", f"### {b.title}", "", f"Ranked by {b.ranking}."]
        hl += [f"<h3>{html.escape(b.title)}</h3>", f"<p>Ranked by {html.escape(b.ranking)}.</p>"]
        if b.note:
            md.append(f"_{b.note}_")
            hl.append(f"<p><em>{html.escape(b.note)}</em></p>")
        md += ["", markdown_table(b.headers, b.rows)]
        hl.append(html_table(b.headers, b.rows))
    return Section(title="Leaderboard", markdown="\n".join(md), html="\n".join(hl), data=[b.data for b in boards])
