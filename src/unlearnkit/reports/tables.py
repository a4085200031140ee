"""Report tables: aggregated cells (shared by Markdown and HTML) and the Markdown report.

A report opens with the leaderboard and the warnings; then, per scenario, a compact table with the default
columns of its request kind (:func:`summary_grid`: at most :data:`MAX_COLUMNS` columns, ``mean ± std`` over
seeds, bold = closest to retrain). Every metric follows under "All metrics": the full table, the same as
``mean ± 95% CI`` (Student t, n − 1 dof) marking values over fewer seeds than asked, and the gaps
``mean(method) − mean(retrain)``, each cut into tables that fit a page (:func:`split_grid`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from unlearnkit.reports._aggregate import (
    Row,
    RunView,
    ScenarioTable,
    aggregate,
    best_of,
    canonical,
    default_columns,
    format_params,
    is_gap_metric,
    metric_arrow,
    metric_meta,
    normalize_runs,
)
from unlearnkit.reports._section import Section, all_sections
from unlearnkit.reports._warnings import ReportWarning, report_warnings

#: decimals of every reported number (means, stds, gaps)
DECIMALS = 3
#: widest Markdown table (columns), so a line fits a page
MAX_COLUMNS = 10

LEGEND = (
    "↑ higher is better · ↓ lower is better · ≈ closest to retrain is better (matching the retrained model). "
    "Cells: mean ± std over seeds (sample std, ddof=1; the mean alone for one seed); n/c: not computed; "
    "—: not reported; bold: best unlearning method in the column (closest to retrain where a retrained model "
    "exists, else by the metric's direction). Every metric, the 95% CIs and the gaps: see All metrics."
)
GAP_NOTE = (
    "Δ vs retrain: mean(method) − mean(retrain) for accuracies and metrics whose goal is to match retrain; "
    "avg |Δ|: mean absolute gap over the accuracy columns (0 is ideal)."
)
CI_NOTE = (
    "mean ± half-width of the 95% confidence interval of the mean over seeds (Student t, n − 1 degrees of "
    "freedom; the mean alone for one seed); seeds: successful / asked, where asked = every seed run in this "
    "scenario; a footnote marks values over fewer seeds than asked."
)
MAX_ERROR_CHARS = 500
#: the registered leaderboard section's title: it opens every report
LEADERBOARD_TITLE = "Leaderboard"
#: what U-LiRA compares with, as a footnote on the first ulira_* column
ULIRA_OUT_TEXT = {
    "unlearned": "shadows that never trained on x, unlearned too on their own forget sets",
    "untouched": "shadows that never trained on x, as trained (not unlearned)",
}


# -- numbers ----------------------------------------------------------------------------------------
def format_number(value: float) -> str:
    """``DECIMALS`` fixed decimals (scientific notation only for magnitudes ≥ 1e5), the same in every table."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if abs(value) >= 1e5:
        return f"{value:.2e}"
    text = f"{value:.{DECIMALS}f}"
    return text[1:] if text.startswith("-") and not any(c not in "-0." for c in text) else text  # no "-0.000"


def format_mean_std(mean: float, std: float | None) -> str:
    """``"0.512 ± 0.010"``, or ``"0.512"`` when there is no std (one seed)."""
    m = format_number(mean)
    return m if std is None else f"{m} ± {format_number(std)}"


def format_gap(gap: float) -> str:
    """A signed gap with ``DECIMALS`` decimals, ``"+0.012"`` / ``"-0.340"`` (``"+0.000"`` when it rounds to 0)."""
    if not math.isfinite(gap) or abs(gap) >= 1e5:
        return format_number(gap)
    text = f"{gap:+.{DECIMALS}f}"
    return "+" + text[1:] if not any(c not in "+-0." for c in text) else text


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Whitespace collapsed to single spaces, cut to ``limit`` characters."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the cell model shared by Markdown and HTML -------------------------------------------------------
@dataclass
class Cell:
    """One table cell: plain text plus presentation hints."""

    text: str
    bold: bool = False
    notes: tuple[int, ...] = ()
    title: str = ""  # tooltip (HTML only)


@dataclass
class Grid:
    """A rendered table: header cells, body rows, the kind of each row, and numbered footnotes."""

    headers: list[Cell]
    rows: list[list[Cell]]
    row_kinds: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> int:
        """The 1-based number of footnote ``text``, adding it if new."""
        if text not in self.notes:
            self.notes.append(text)
        return self.notes.index(text) + 1


def _header(metric: str, prefix: str = "") -> Cell:
    """A metric column header; gap columns (``prefix``) get no arrow: for a gap, 0 is best."""
    meta = metric_meta(metric)
    text = f"{prefix}{metric}" if prefix else f"{metric} {metric_arrow(metric)}".strip()
    return Cell(text, title=meta.description if meta is not None else "not a registered metric")


def _seeds_text(n_ok: int, n_failed: int, n_asked: int = 0) -> str:
    """``"3"``, ``"2 (+1 failed)"``, or ``"1 of 3 (+1 failed)"`` when some asked seeds never ran."""
    text = str(n_ok) if n_ok + n_failed >= n_asked else f"{n_ok} of {n_asked}"
    return f"{text} (+{n_failed} failed)" if n_failed else text


def _metric_cell(grid: Grid, row: Row, metric: str, bold: bool) -> Cell:
    """The ``mean ± std`` cell of ``metric`` in ``row`` (``—`` missing, ``n/c`` not computed, with footnotes)."""
    stat = row.stats.get(metric)
    if stat is None or (stat.n == 0 and not stat.reasons):
        return Cell("—")
    if stat.n == 0:
        return Cell("n/c", notes=(grid.note(f"{metric}: {stat.not_computed}"),))
    notes: tuple[int, ...] = ()
    if stat.n < stat.n_runs:
        why = f"; {stat.not_computed}" if stat.reasons else "; missing in the others"
        notes = (grid.note(f"{metric}: computed in {stat.n} of {stat.n_runs} seeds{why}"),)
    return Cell(format_mean_std(stat.mean, stat.std), bold=bold, notes=notes)


def _label_cell(row: Row) -> Cell:
    return Cell(row.label, title=format_params(row.params) or "no hyperparameters")


def metrics_grid(table: ScenarioTable, metrics: Sequence[str] | None = None) -> Grid:
    """One row per method, one column per metric (default: every shown metric), ``mean ± std``."""
    metrics = table.metrics if metrics is None else list(metrics)
    grid = Grid(headers=[Cell("method"), Cell("seeds")] + [_header(m) for m in metrics], rows=[])
    best = {m: table.best(m) for m in metrics}
    for i, row in enumerate(table.rows):
        cells = [_label_cell(row), Cell(_seeds_text(row.n_seeds, len(row.failed), table.n_asked))]
        cells += [_metric_cell(grid, row, m, i in best[m]) for m in metrics]
        grid.rows.append(cells)
        grid.row_kinds.append(row.kind)
    if any(m.startswith("ulira_") for m in metrics):
        _note_ulira(grid, table, metrics)
    return grid


#: header of the compact table's gap column
GAP_HEADER = "|Δ| vs retrain ↓"


def summary_grid(table: ScenarioTable) -> Grid:
    """The compact table: the default columns of the request kind (:func:`default_columns`) and, with a
    retrained model, the mean |Δ| to it over the accuracy columns; at most 10 columns.

    Bold marks the best unlearning method per column: closest to retrain (smallest |Δ|) where a
    retrained model exists, else by the metric's direction among the unlearned models.
    """
    cols = default_columns(table)
    accs = [m for m in cols if m.startswith("acc_")]
    with_gap = table.retrain is not None and bool(accs)
    grid = metrics_grid(table, cols)
    if not with_gap:
        return grid
    at = 2 + len(accs)
    grid.headers.insert(at, Cell(GAP_HEADER, title="mean |mean(method) − mean(retrain)| over " + ", ".join(accs)))
    gaps = {i: table.mean_abs_gap(row, accs) for i, row in enumerate(table.rows)}
    method_gaps = {i: -g for i, g in gaps.items() if g is not None and table.rows[i].kind == "method"}
    best = best_of(method_gaps) if len(method_gaps) >= 2 else set()
    for i, row in enumerate(table.rows):
        g = gaps[i]
        text = "—" if g is None else ("0 (reference)" if row.kind == "retrain" else format_number(g))
        grid.rows[i].insert(at, Cell(text, bold=i in best))
    return grid


def split_grid(grid: Grid, max_columns: int = MAX_COLUMNS, keep: int = 2) -> list[Grid]:
    """``grid`` cut into grids of at most ``max_columns`` columns, each repeating the first ``keep`` columns
    (method, seeds), so a Markdown line fits a page. Footnotes stay with the first part."""
    body = len(grid.headers) - keep
    width = max(1, max_columns - keep)
    if body <= width:
        return [grid]
    parts = []
    for start in range(keep, len(grid.headers), width):
        cols = list(range(keep)) + list(range(start, min(start + width, len(grid.headers))))
        parts.append(Grid(headers=[grid.headers[c] for c in cols], rows=[[r[c] for c in cols] for r in grid.rows],
                          row_kinds=list(grid.row_kinds), notes=grid.notes))  # fmt: skip
    return parts


def _note_ulira(grid: Grid, table: ScenarioTable, metrics: Sequence[str] | None = None) -> None:
    """Footnote the first U-LiRA column of ``grid`` with what U-LiRA's IN and OUT sides are."""
    ulira = [i for i, m in enumerate(table.metrics if metrics is None else metrics) if m.startswith("ulira_")]
    if ulira:
        grid.headers[2 + ulira[0]].notes = (grid.note(_ulira_note(table)),)


def _ulira_note(table: ScenarioTable) -> str:
    """U-LiRA's two sides in ``table``'s runs (records from before ``ulira_out`` existed used untouched OUT)."""
    sides = sorted({str((r.record.get("config") or {}).get("ulira_out", "untouched")) for row in table.rows
                    for r in row.runs if any(k.startswith("ulira_") for k in r.metrics)})  # fmt: skip
    out = "; or ".join(ULIRA_OUT_TEXT.get(s, s) for s in sides) or ULIRA_OUT_TEXT["unlearned"]
    why = "; too little or too much forgetting both raise it" if sides in ([], ["unlearned"]) else ""
    return (
        f"U-LiRA (ulira_*): IN = shadows trained on x and then unlearned with the row's method; OUT = {out}. "
        f"0.5 = indistinguishable from retraining{why}."
    )


def _short_note(table: ScenarioTable, row: Row) -> str:
    """Why ``row`` has fewer seeds than asked: which seeds failed and which never ran."""
    parts = []
    if row.failed:
        parts.append("failed: " + ", ".join(canonical(r.seed) for r in row.failed))
    missing = row.seeds_not_run(table.seeds_asked)
    if missing:
        parts.append("not run: " + ", ".join(missing))
    return f"{row.label}: {row.n_seeds} of {table.n_asked} seeds asked ({'; '.join(parts)})"


def ci_grid(table: ScenarioTable) -> Grid | None:
    """``mean ± 95% CI`` per method and metric, or ``None`` when no value is over two seeds or more."""
    if not any(s.n >= 2 for row in table.rows for s in row.stats.values()):
        return None
    grid = Grid(headers=[Cell("method"), Cell("seeds")] + [_header(m) for m in table.metrics], rows=[])
    for row in table.rows:
        seeds = Cell(f"{row.n_seeds}/{table.n_asked}")
        if table.short(row):
            seeds.notes = (grid.note(_short_note(table, row)),)
        cells = [Cell(row.label, title=format_params(row.params) or "no hyperparameters"), seeds]
        for m in table.metrics:
            stat = row.stats.get(m)
            if stat is None or stat.n == 0:
                cells.append(Cell("n/c" if stat is not None and stat.reasons else "—"))
                continue
            notes: tuple[int, ...] = ()
            if stat.n < table.n_asked:
                notes = (grid.note(f"fewer seeds than asked: {stat.n} of {table.n_asked}"),)
            cells.append(Cell(format_mean_std(stat.mean, stat.ci95), notes=notes))
        grid.rows.append(cells)
        grid.row_kinds.append(row.kind)
    _note_ulira(grid, table)
    return grid


def gap_metrics(table: ScenarioTable) -> list[str]:
    """Shown metrics that get a ``Δ vs retrain`` column."""
    return [m for m in table.metrics if is_gap_metric(m)]


def gap_grid(table: ScenarioTable) -> Grid | None:
    """The ``Δ vs retrain`` table (every row but retrain), or ``None`` without a retrain row or gap metric."""
    ref = table.retrain
    metrics = gap_metrics(table)
    if ref is None or not metrics:
        return None
    acc = [m for m in metrics if m.startswith("acc_")]
    grid = Grid(headers=[Cell("method")] + [_header(m, "Δ ") for m in metrics], rows=[])
    if acc:
        grid.headers.append(Cell("avg |Δ| ↓", title="mean absolute gap to retrain over " + ", ".join(acc)))
    avgs: dict[int, float] = {}
    for row in table.rows:
        if row.kind == "retrain":
            continue
        cells = [Cell(row.label, title=format_params(row.params) or "no hyperparameters")]
        for m in metrics:
            gap = table.gap(row, m)
            stat = row.stats.get(m)
            if gap is not None:
                cells.append(Cell(format_gap(gap)))
            elif stat is not None and stat.n == 0 and stat.reasons:
                cells.append(Cell("n/c"))
            else:
                cells.append(Cell("—"))
        if acc:
            gaps = [abs(g) for g in (table.gap(row, m) for m in acc) if g is not None and math.isfinite(g)]
            if gaps:
                avgs[len(grid.rows)] = sum(gaps) / len(gaps)
                cells.append(Cell(format_number(avgs[len(grid.rows)])))
            else:
                cells.append(Cell("—"))
        grid.rows.append(cells)
        grid.row_kinds.append(row.kind)
    # bold the smallest average gap among the unlearning methods (not the original)
    method_avgs = {i: a for i, a in avgs.items() if grid.row_kinds[i] == "method"}
    if len(method_avgs) >= 2:
        low = min(method_avgs.values())
        for i, a in method_avgs.items():
            grid.rows[i][-1].bold = a <= low + 1e-12
    return grid


def failure_lines(table: ScenarioTable) -> list[str]:
    """One line per failed run: ``"neggrad (lr=0.1), seed 2: <error>"``."""
    by_index = {run.index: row.label for row in table.rows for run in row.failed}
    return [
        f"{by_index[run.index]}, seed {run.seed} [{run.status}]: {one_line(run.error or '(no error message)')}"
        for run in table.failures
    ]


def flagged_lines(table: ScenarioTable) -> list[str]:
    """One line per scored-but-flagged run: ``"finetune (lr=1e+12), seed 0: collapsed: acc_test 0.116 ..."``."""
    return [
        f"{label}, seed {run.seed}: " + "; ".join(one_line(str(f)) for f in run.record.get("flags") or ())
        for label, run in table.flagged
    ]


def dropped_lines(table: ScenarioTable) -> list[str]:
    """One line per dropped column: ``"zrf — not computed: no random model"``."""
    return [f"{m} — " + "; ".join(one_line(r) for r in reasons) for m, reasons in table.dropped.items()]


def overview(views: Sequence[RunView], tables: Sequence[ScenarioTable]) -> str:
    """``"12 runs (11 ok, 1 failed) in 2 scenario tables."``"""
    n_ok = sum(v.ok for v in views)
    n_bad = len(views) - n_ok
    bad = f", {n_bad} failed" if n_bad else ""
    s = "" if len(tables) == 1 else "s"
    return f"{len(views)} runs ({n_ok} ok{bad}) in {len(tables)} scenario table{s}."


# -- Markdown ---------------------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    return one_line(text, limit=10**6).replace("\\", "\\\\").replace("|", "\\|")


def _md_cell(cell: Cell) -> str:
    text = _md_escape(cell.text)
    if cell.bold:
        text = f"**{text}**"
    return text + "".join(f" [{n}]" for n in cell.notes)


def plain_grid(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> Grid:
    """A :class:`Grid` of plain values: ``None`` -> ``—``, floats with ``DECIMALS`` decimals, the rest ``str``."""

    def cell(v: Any) -> Cell:
        if v is None:
            return Cell("—")
        return Cell(format_number(v) if isinstance(v, float) else str(v))

    return Grid(headers=[Cell(str(h)) for h in headers], rows=[[cell(v) for v in r] for r in rows])


def grid_to_markdown(grid: Grid) -> str:
    """A GitHub-flavoured Markdown table (first column left-aligned, the rest right-aligned)."""
    lines = ["| " + " | ".join(_md_cell(c) for c in grid.headers) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(grid.headers) - 1)) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in grid.rows]
    if grid.notes:
        lines.append("")
        lines += [f"[{i}] {_md_escape(n)}  " for i, n in enumerate(grid.notes, 1)]
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table from plain values (floats get ``DECIMALS`` decimals; cells are escaped).

    A helper for :class:`~unlearnkit.reports.Section` authors (e.g. a table of published reference rows).
    """
    return grid_to_markdown(plain_grid(headers, rows))


NO_RETRAIN_BY_DESIGN = (
    "No retrained model in setting 3, by design: methods are compared with the original, and bold marks "
    "the best unlearned model by each metric's direction."
)
NO_RETRAIN = "No successful retrain run in this scenario: gaps to retrain cannot be computed."


def no_gap_text(table: ScenarioTable) -> str:
    """Why a table has no ``Δ vs retrain`` part."""
    if table.retrain_by_design_absent:
        return NO_RETRAIN_BY_DESIGN
    if table.retrain is None:
        return NO_RETRAIN
    return "No accuracy metrics to compare with retrain."


def _md_grids(grid: Grid) -> list[str]:
    parts = split_grid(grid, keep=2 if len(grid.headers) > 1 and grid.headers[1].text == "seeds" else 1)
    out: list[str] = []
    for i, part in enumerate(parts):
        if i:
            part = Grid(part.headers, part.rows, part.row_kinds, [])  # footnotes once, after the first part
        out += ["", grid_to_markdown(part)]
    return out


def table_to_markdown(table: ScenarioTable) -> str:
    """One scenario's compact section of report.md: the default columns, failures and flags."""
    out = [f"## {_md_escape(table.title)}"]
    if table.caption:
        out += ["", f"_{_md_escape(table.caption)}_"]
    if table.metrics:
        out += ["", grid_to_markdown(summary_grid(table))]
    else:
        out += ["", "No metric values for this scenario."]
    if table.retrain is None:
        out += ["", no_gap_text(table)]
    failures = failure_lines(table)
    if failures:
        out += ["", f"**Failed runs ({len(failures)}):**", ""]
        out += [f"- {_md_escape(line)}" for line in failures]
    flagged = flagged_lines(table)
    if flagged:
        out += ["", f"**Flagged runs ({len(flagged)}), scored but to be read with care:**", ""]
        out += [f"- {_md_escape(line)}" for line in flagged]
    return "\n".join(out)


def all_metrics_markdown(table: ScenarioTable) -> str:
    """One scenario's part of the "All metrics" section: every metric, the 95% CIs and the gaps, in tables
    of at most :data:`MAX_COLUMNS` columns."""
    out = [f"### {_md_escape(table.title)}"]
    if table.metrics:
        out += _md_grids(metrics_grid(table))
    if table.dropped:
        out += ["", "Columns not shown (no run has a value):", ""]
        out += [f"- {_md_escape(line)}" for line in dropped_lines(table)]
    ci = ci_grid(table)
    if ci is not None:
        out += ["", "#### Mean ± 95% CI over seeds", "", f"_{_md_escape(CI_NOTE)}_", *_md_grids(ci)]
    out += ["", "#### Δ vs retrain"]
    gaps = gap_grid(table)
    out += _md_grids(gaps) if gaps is not None else ["", no_gap_text(table)]
    return "\n".join(out)


def warnings_markdown(warnings: Sequence[ReportWarning]) -> str:
    """The warnings block (empty string when there is none)."""
    if not warnings:
        return ""
    return "\n".join(
        ["## Warnings", ""] + [f"- **{w.kind.replace('_', ' ')}** · {_md_escape(str(w))}" for w in warnings]
    )


def split_leaderboard(sections: Sequence[Section]) -> tuple[list[Section], list[Section]]:
    """``(leaderboard sections, the others)``: the leaderboard opens every report."""
    first = [s for s in sections if s.title == LEADERBOARD_TITLE]
    return first, [s for s in sections if s.title != LEADERBOARD_TITLE]


def markdown_report(views: Sequence[RunView], tables: Sequence[ScenarioTable], sections: Sequence[Section] = ()) -> str:
    """report.md from already aggregated tables (see :func:`render_markdown`).

    Order: the leaderboard, the warnings, one compact table per scenario, the other sections, then every
    metric ("All metrics").
    """
    out = ["# unlearnkit report", ""]
    first, rest = split_leaderboard(sections)
    if not views:
        out.append("No runs to report.")
    else:
        out.append(overview(views, tables))
    for s in first:
        out += ["", f"## {_md_escape(s.title)}", "", s.markdown.rstrip()]
    if views:
        warns = warnings_markdown(report_warnings(list(tables)))
        out += ["", warns] if warns else []
        out += ["", "## Scenarios", "", LEGEND]
        for table in tables:
            out += ["", table_to_markdown(table)]
    for s in rest:
        out += ["", f"## {_md_escape(s.title)}", "", s.markdown.rstrip()]
    if views and any(t.metrics or t.dropped for t in tables):
        out += ["", "## All metrics", "", GAP_NOTE]
        for table in tables:
            out += ["", all_metrics_markdown(table)]
    return "\n".join(out).rstrip() + "\n"


def render_markdown(runs: Iterable[Mapping[str, Any]], extra_sections: Iterable[Section] | None = None) -> str:
    """The Markdown report: one table per (dataset, forget spec, model), seeds aggregated.

    Args:
        runs: run records as loaded from the results store.
        extra_sections: sections appended after the scenario tables.

    Returns:
        The report text; an empty ``runs`` gives a report saying there are no runs.
    """
    views = normalize_runs(runs)
    return markdown_report(views, aggregate(views), all_sections([v.record for v in views], extra_sections))
