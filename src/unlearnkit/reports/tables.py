"""Report tables: aggregated cells (shared by Markdown and HTML) and the Markdown report.

Per scenario table: the retrained model first, then the original, then each method; one column per
metric with ``mean ± std`` over seeds (sample std, ``ddof=1``; the mean alone for one seed), ``n/c`` with
a footnote when a value was not computed; with several seeds, the same table as ``mean ± 95% CI``
(Student t, n − 1 dof) marking values over fewer seeds than asked; and a table of gaps
``mean(method) − mean(retrain)``.
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
    canonical,
    format_params,
    is_gap_metric,
    metric_arrow,
    metric_meta,
    normalize_runs,
)
from unlearnkit.reports._section import Section, all_sections

#: decimals of every reported number (means, stds, gaps)
DECIMALS = 3

LEGEND = (
    "↑ higher is better · ↓ lower is better · ≈ closest to retrain is better (matching the retrained model). "
    "Cells: mean ± std over seeds (sample std, ddof=1; the mean alone for one seed); n/c: not computed; "
    "—: not reported; bold: best unlearning method in the column."
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
#: what U-LiRA compares with, as a footnote on the first ulira_* column
ULIRA_OUT_TEXT = {
    "unlearned": "shadows that never trained on x, unlearned too on their own forget sets",
    "untouched": "shadows that never trained on x, as trained (not unlearned)",
}


# -- numbers ----------------------------------------------------------------------------------------
def format_number(value: float) -> str:
    """``DECIMALS`` decimals; scientific notation for tiny (< 1e-3) or huge (≥ 1e5) magnitudes."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and (abs(value) < 10**-DECIMALS or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.{DECIMALS}f}"


def format_mean_std(mean: float, std: float | None) -> str:
    """``"0.512 ± 0.010"``, or ``"0.512"`` when there is no std (one seed).

    The std uses the mean's notation (fixed decimals unless the mean itself needs scientific notation).
    """
    m = format_number(mean)
    if std is None:
        return m
    s = format_number(std) if "e" in m or not math.isfinite(std) or abs(std) >= 1e5 else f"{std:.{DECIMALS}f}"
    return f"{m} ± {s}"


def format_gap(gap: float) -> str:
    """A signed gap, ``"+0.012"`` / ``"-0.340"``."""
    if not math.isfinite(gap):
        return format_number(gap)
    if gap != 0 and abs(gap) < 10**-DECIMALS:
        return f"{gap:+.2e}"
    return f"{gap:+.{DECIMALS}f}"


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


def metrics_grid(table: ScenarioTable) -> Grid:
    """The main table of ``table``: one row per method, one column per shown metric."""
    grid = Grid(headers=[Cell("method"), Cell("seeds")] + [_header(m) for m in table.metrics], rows=[])
    best = {m: table.best(m) for m in table.metrics}
    for i, row in enumerate(table.rows):
        cells = [
            Cell(row.label, title=format_params(row.params) or "no hyperparameters"),
            Cell(_seeds_text(row.n_seeds, len(row.failed), table.n_asked)),
        ]
        for m in table.metrics:
            stat = row.stats.get(m)
            if stat is None or (stat.n == 0 and not stat.reasons):
                cells.append(Cell("—"))
            elif stat.n == 0:
                cells.append(Cell("n/c", notes=(grid.note(f"{m}: {stat.not_computed}"),)))
            else:
                notes: tuple[int, ...] = ()
                if stat.n < stat.n_runs:
                    why = f"; {stat.not_computed}" if stat.reasons else "; missing in the others"
                    notes = (grid.note(f"{m}: computed in {stat.n} of {stat.n_runs} seeds{why}"),)
                cells.append(Cell(format_mean_std(stat.mean, stat.std), bold=i in best[m], notes=notes))
        grid.rows.append(cells)
        grid.row_kinds.append(row.kind)
    ulira = [i for i, m in enumerate(table.metrics) if m.startswith("ulira_")]
    if ulira:
        grid.headers[2 + ulira[0]].notes = (grid.note(_ulira_note(table)),)
    return grid


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
    ulira = [i for i, m in enumerate(table.metrics) if m.startswith("ulira_")]
    if ulira:
        grid.headers[2 + ulira[0]].notes = (grid.note(_ulira_note(table)),)
    return grid


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


def table_to_markdown(table: ScenarioTable) -> str:
    """One scenario's section of report.md."""
    out = [f"## {_md_escape(table.title)}"]
    if table.caption:
        out += ["", f"_{_md_escape(table.caption)}_"]
    if table.metrics:
        out += ["", grid_to_markdown(metrics_grid(table))]
    else:
        out += ["", "No metric values for this scenario."]
    if table.dropped:
        out += ["", "Columns not shown (no run has a value):", ""]
        out += [f"- {_md_escape(line)}" for line in dropped_lines(table)]
    ci = ci_grid(table)
    if ci is not None:
        out += ["", "### Mean ± 95% CI over seeds", "", f"_{_md_escape(CI_NOTE)}_", "", grid_to_markdown(ci)]
    gaps = gap_grid(table)
    out += ["", "### Δ vs retrain", ""]
    if gaps is not None:
        out.append(grid_to_markdown(gaps))
    elif table.retrain is None:
        out.append("No successful retrain run in this scenario: gaps to retrain cannot be computed.")
    else:
        out.append("No accuracy metrics to compare with retrain.")
    failures = failure_lines(table)
    if failures:
        out += ["", f"**Failed runs ({len(failures)}):**", ""]
        out += [f"- {_md_escape(line)}" for line in failures]
    flagged = flagged_lines(table)
    if flagged:
        out += ["", f"**Flagged runs ({len(flagged)}), scored but to be read with care:**", ""]
        out += [f"- {_md_escape(line)}" for line in flagged]
    return "\n".join(out)


def markdown_report(views: Sequence[RunView], tables: Sequence[ScenarioTable], sections: Sequence[Section] = ()) -> str:
    """report.md from already aggregated tables (see :func:`render_markdown`)."""
    out = ["# unlearnkit report", ""]
    if not views:
        out.append("No runs to report.")
    else:
        out += [overview(views, tables), "", LEGEND, "", GAP_NOTE]
        for table in tables:
            out += ["", table_to_markdown(table)]
    for s in sections:
        out += ["", f"## {_md_escape(s.title)}", "", s.markdown.rstrip()]
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
