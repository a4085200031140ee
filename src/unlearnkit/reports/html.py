"""The HTML report: one self-contained file (inline CSS, figures as base64 PNG, no external URL)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from unlearnkit.reports._aggregate import RunView, ScenarioTable, aggregate, normalize_runs
from unlearnkit.reports._section import Section, all_sections
from unlearnkit.reports._warnings import report_warnings
from unlearnkit.reports.plots import scenario_plots
from unlearnkit.reports.tables import (
    CI_NOTE,
    GAP_NOTE,
    LEGEND,
    Cell,
    Grid,
    ci_grid,
    dropped_lines,
    failure_lines,
    flagged_lines,
    gap_grid,
    metrics_grid,
    no_gap_text,
    overview,
    plain_grid,
    split_grid,
    split_leaderboard,
    summary_grid,
)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
h3 { margin-top: 1.4rem; font-size: 1.05rem; }
.muted, .caption { color: #666; font-size: .9rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; position: sticky; top: 0; }
th:first-child, td:first-child { text-align: left; }
tr.retrain td { background: #fff1e0; font-weight: 600; }
tr.original td { background: #f6f6f6; font-style: italic; }
td strong { color: #0a5; }
sup { color: #a40; }
ol.notes, ul.dropped, ul.failed { font-size: .85rem; margin: .3rem 0; }
ul.failed li { color: #a00; }
ul.flagged li { color: #960; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
figure { margin: 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .8rem; color: #555; max-width: 640px; }
nav ul { columns: 2; font-size: .9rem; }
details.all { margin: .6rem 0; } details.all summary { cursor: pointer; color: #036; }
section.warnings { border-left: 4px solid #d80; background: #fff8e8; padding: .2rem 1rem; margin: 1rem 0; }
section.warnings h2 { margin-top: .4rem; border: 0; }
pre { background: #f7f7f7; padding: .6rem; overflow-x: auto; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _cell(cell: Cell, tag: str) -> str:
    title = f' title="{_e(cell.title)}"' if cell.title else ""
    body = _e(cell.text)
    if cell.bold:
        body = f"<strong>{body}</strong>"
    body += "".join(f"<sup>[{n}]</sup>" for n in cell.notes)
    return f"<{tag}{title}>{body}</{tag}>"


def grid_to_html(grid: Grid, css_class: str = "") -> str:
    """A ``<table>`` (rows classed by kind: retrain/original/method) followed by its footnotes."""
    cls = f' class="{_e(css_class)}"' if css_class else ""
    out = [f'<div class="scroll"><table{cls}>', "<thead><tr>" + "".join(_cell(c, "th") for c in grid.headers)]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(grid.rows):
        kind = grid.row_kinds[i] if i < len(grid.row_kinds) else "method"
        out.append(f'<tr class="{_e(kind)}">' + "".join(_cell(c, "td") for c in row) + "</tr>")
    out.append("</tbody></table></div>")
    if grid.notes:
        out.append('<ol class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in grid.notes) + "</ol>")
    return "\n".join(out)


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An escaped HTML table from plain values (floats formatted like the report's numbers).

    A helper for :class:`~unlearnkit.reports.Section` authors.
    """
    return grid_to_html(plain_grid(headers, rows))


def _table_section(table: ScenarioTable, anchor: str) -> str:
    out = [f'<section id="{anchor}">', f"<h2>{_e(table.title)}</h2>"]
    if table.caption:
        out.append(f'<p class="caption">{_e(table.caption)}</p>')
    if table.metrics:
        out.append(grid_to_html(summary_grid(table), "metrics"))
    else:
        out.append("<p>No metric values for this scenario.</p>")
    if table.retrain is None:
        out.append(f'<p class="muted">{_e(no_gap_text(table))}</p>')
    plots = scenario_plots(table)
    if plots:
        out.append('<div class="figures">')
        for p in plots:
            out.append(
                f'<figure><img src="{p.data_uri}" alt="{_e(p.caption)}">'
                f"<figcaption>{_e(p.caption)}</figcaption></figure>"
            )
        out.append("</div>")
    failures = failure_lines(table)
    if failures:
        out.append(f"<h3>Failed runs ({len(failures)})</h3>")
        out.append('<ul class="failed">' + "".join(f"<li>{_e(line)}</li>" for line in failures) + "</ul>")
    flagged = flagged_lines(table)
    if flagged:
        out.append(f"<h3>Flagged runs ({len(flagged)}): scored, but read with care</h3>")
        out.append('<ul class="flagged">' + "".join(f"<li>{_e(line)}</li>" for line in flagged) + "</ul>")
    out.append(_all_metrics(table))
    out.append("</section>")
    return "\n".join(out)


def _all_metrics(table: ScenarioTable) -> str:
    """The collapsed "all metrics" part of a scenario: every metric, the 95% CIs and the gaps to retrain."""
    out = ['<details class="all"><summary>All metrics (every column, 95% CIs, Δ vs retrain)</summary>']
    if table.metrics:
        out.append(_split_html(metrics_grid(table), "metrics"))
    if table.dropped:
        out.append('<p class="muted">Columns not shown (no run has a value):</p><ul class="dropped">')
        out += [f"<li>{_e(line)}</li>" for line in dropped_lines(table)]
        out.append("</ul>")
    ci = ci_grid(table)
    if ci is not None:
        out += ["<h3>Mean ± 95% CI over seeds</h3>", f'<p class="muted">{_e(CI_NOTE)}</p>', _split_html(ci, "ci")]
    out += ["<h3>Δ vs retrain</h3>", f'<p class="muted">{_e(GAP_NOTE)}</p>']
    gaps = gap_grid(table)
    out.append(_split_html(gaps, "gaps", keep=1) if gaps is not None else f"<p>{_e(no_gap_text(table))}</p>")
    out.append("</details>")
    return "\n".join(out)


#: widest "All metrics" HTML table: long metric names at 8 columns still fit a 1400 px window
HTML_MAX_COLUMNS = 8


def _split_html(grid: Grid, css_class: str, keep: int = 2) -> str:
    """``grid`` as tables of at most :data:`HTML_MAX_COLUMNS` columns (no sideways scrolling), footnotes once."""
    parts = split_grid(grid, max_columns=HTML_MAX_COLUMNS, keep=keep)
    html_parts = [grid_to_html(Grid(p.headers, p.rows, p.row_kinds, []), css_class) for p in parts[:-1]]
    return "\n".join([*html_parts, grid_to_html(parts[-1], css_class)])


def _section_html(s: Section, anchor: str) -> str:
    inner = s.html if s.html is not None else f"<pre>{_e(s.markdown)}</pre>"
    return f'<section id="{anchor}"><h2>{_e(s.title)}</h2>\n{inner}\n</section>'


def _warnings_html(tables: Sequence[ScenarioTable]) -> str:
    warns = report_warnings(list(tables))
    if not warns:
        return ""
    items = "".join(f"<li><strong>{_e(w.kind.replace('_', ' '))}</strong> · {_e(str(w))}</li>" for w in warns)
    return f'<section id="warnings" class="warnings"><h2>Warnings</h2><ul>{items}</ul></section>'


def html_report(views: Sequence[RunView], tables: Sequence[ScenarioTable], sections: Sequence[Section] = ()) -> str:
    """report.html from already aggregated tables (see :func:`render_html`).

    Order: the leaderboard, the warnings, one compact table (with its figures and a collapsed "all
    metrics" part) per scenario, then the other sections.
    """
    body = ["<h1>unlearnkit report</h1>"]
    first, rest = split_leaderboard(sections)
    if not views:
        body.append("<p>No runs to report.</p>")
    else:
        body.append(f'<p class="muted">{_e(overview(views, tables))}</p>')
        toc = [f'<li><a href="#lead-{i}">{_e(s.title)}</a></li>' for i, s in enumerate(first, 1)]
        toc += [f'<li><a href="#scenario-{i}">{_e(t.title)}</a></li>' for i, t in enumerate(tables, 1)]
        toc += [f'<li><a href="#section-{i}">{_e(s.title)}</a></li>' for i, s in enumerate(rest, 1)]
        body.append("<nav><ul>" + "".join(toc) + "</ul></nav>")
    body += [_section_html(s, f"lead-{i}") for i, s in enumerate(first, 1)]
    if views:
        warns = _warnings_html(tables)
        body += [warns] if warns else []
        body.append(f'<p class="muted">{_e(LEGEND)}</p>')
        body += [_table_section(t, f"scenario-{i}") for i, t in enumerate(tables, 1)]
    body += [_section_html(s, f"section-{i}") for i, s in enumerate(rest, 1)]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>unlearnkit report</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def render_html(runs: Iterable[Mapping[str, Any]], extra_sections: Iterable[Section] | None = None) -> str:
    """The HTML report: the Markdown report's tables plus, per scenario, two figures.

    The figures are forget vs retain accuracy per method (error bars over seeds, retrain highlighted) and
    ``time_ratio_vs_retrain`` per method on a log scale. Everything is in the one file: inline CSS and
    ``data:image/png;base64`` images, no external URL. All text from the runs is HTML-escaped; the
    ``html`` of extra sections is inserted as given (trusted).

    Args:
        runs: run records as loaded from the results store.
        extra_sections: sections appended after the scenario tables.
    """
    views = normalize_runs(runs)
    return html_report(views, aggregate(views), all_sections([v.record for v in views], extra_sections))
