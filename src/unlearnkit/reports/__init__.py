"""Reports: turn run records from the results store into report.json, report.md and report.html.

Every report shows the retrained model beside each method, the gap to it, and the cost ratio to
retraining (DESIGN.md, "Quality bar")::

    from unlearnkit.reports import write_reports
    paths = write_reports(runs, "runs/2026-11-29")   # {"json": ..., "md": ..., "html": ...}

Later code adds its own sections (a talk-layout table with published reference rows, a leaderboard)
through ``extra_sections=[Section(title, markdown, html)]``, building tables with :func:`markdown_table`
and :func:`html_table`, and can reuse the aggregation through :func:`aggregate`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from unlearnkit.reports._aggregate import (
    CI_LEVEL,
    STD_DDOF,
    Row,
    RunView,
    ScenarioTable,
    Stat,
    aggregate,
    metric_meta,
    normalize_runs,
    order_metrics,
    to_jsonable,
)
from unlearnkit.reports._section import SECTIONS, Section, all_sections, register_section
from unlearnkit.reports._warnings import ReportWarning, report_warnings
from unlearnkit.reports.html import html_report, html_table, render_html
from unlearnkit.reports.tables import markdown_report, markdown_table, render_markdown

__all__ = [
    "SECTIONS",
    "ReportWarning",
    "Row",
    "RunView",
    "ScenarioTable",
    "Section",
    "Stat",
    "aggregate",
    "build_report_json",
    "html_table",
    "markdown_table",
    "register_section",
    "render_html",
    "render_markdown",
    "report_warnings",
    "write_reports",
]

#: keys of each report.json run, in this order (DESIGN.md's contract plus model/status/error);
#: any other key of the record (key, created_at, splits_hash, ...) follows unchanged
RUN_KEYS = ("scenario", "model", "method", "params", "seed", "status", "error", "metrics")


def _run_json(view: RunView) -> dict[str, Any]:
    out: dict[str, Any] = {
        "scenario": view.scenario, "model": view.model, "method": view.method, "params": view.params,
        "seed": view.seed, "status": view.status, "error": view.error, "metrics": view.metrics,
    }  # fmt: skip
    out.update({k: v for k, v in view.record.items() if k not in RUN_KEYS})
    return to_jsonable(out)


def _summary_json(table: ScenarioTable, row: Row) -> dict[str, Any]:
    metrics = order_metrics(row.stats)
    gaps = None
    if table.retrain is not None:
        gaps = {m: table.gap(row, m) for m in metrics if row.stats[m].n}
    return to_jsonable({
        "scenario": table.scenario, "model": table.model, "method": row.method, "params": row.params,
        "label": row.label, "n_seeds": row.n_seeds, "n_failed": len(row.failed), "seeds": [r.seed for r in row.runs],
        "n_seeds_asked": table.n_asked, "fewer_seeds_than_asked": table.short(row),
        "metrics": {m: row.stats[m].to_json() for m in metrics}, "gap_to_retrain": gaps,
    })  # fmt: skip


def _metrics_info(views: list[RunView]) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for name in order_metrics(n for v in views for n in v.metrics):
        meta = metric_meta(name)
        info[name] = (
            {"registered": True, "higher_is_better": meta.higher_is_better, "description": meta.description}
            if meta is not None else {"registered": False, "higher_is_better": None, "description": ""}
        )  # fmt: skip
    return info


def _report_json(views: list[RunView], tables: list[ScenarioTable], sections: list[Section]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "runs": [_run_json(v) for v in views],
        "summary": [_summary_json(t, row) for t in tables for row in t.rows],
        "aggregation": {
            "group": "scenario without seed, model, method, params",
            "std_ddof": STD_DDOF,
            "ci": f"ci95 = half-width of the {CI_LEVEL:.0%} confidence interval of the mean (Student t, n - 1 dof)",
            "seeds_asked": "every seed run (ok or failed) in the same scenario and model",
            "gap_to_retrain": "mean(method) - mean(retrain) in the same scenario and model",
        },
        "metrics_info": _metrics_info(views),
    }
    out["warnings"] = [w.to_json() for w in report_warnings(tables)]
    if sections:
        out["sections"] = [to_jsonable({"title": s.title, "markdown": s.markdown, "data": s.data}) for s in sections]
    return out


def build_report_json(
    runs: Iterable[Mapping[str, Any]], extra_sections: Iterable[Section] | None = None
) -> dict[str, Any]:
    """The content of report.json.

    Returns:
        ``{"runs": [...], "summary": [...], "aggregation": {...}, "metrics_info": {...}}`` (plus
        ``"sections"`` when extra sections are given). ``runs`` has every input record, in input order,
        with ``scenario, model, method, params, seed, status, error, metrics`` (DESIGN.md's contract) and
        any other key of the record; metric values are kept as they are, ``"not computed: <reason>"``
        strings included. ``summary`` has one entry per (scenario without seed, model, method, params):
        ``n_seeds``, ``n_failed``, ``seeds``, per metric ``{"mean", "std", "n"}`` (sample std, ``None``
        for one seed) or the ``"not computed: ..."`` string when no seed has a value, and
        ``gap_to_retrain`` (``None`` without a retrain run). ``warnings`` lists what a reader must see
        before trusting a ranking (``{"kind", "scenario", "method", "message"}``). The dict is strict
        JSON: non-finite floats
        are stored as ``"nan"``/``"inf"``/``"-inf"``.
    """
    views = normalize_runs(runs)
    return _report_json(views, aggregate(views), all_sections([v.record for v in views], extra_sections))


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_reports(
    runs: Iterable[Mapping[str, Any]], out_dir: str | os.PathLike[str], extra_sections: Iterable[Section] | None = None
) -> dict[str, Path]:
    """Write report.json, report.md and report.html into ``out_dir`` (created if needed), atomically.

    Args:
        runs: run records as loaded from the results store.
        out_dir: destination folder.
        extra_sections: sections appended to every format (see :class:`Section`).

    Returns:
        ``{"json": .../report.json, "md": .../report.md, "html": .../report.html}``.
    """
    views = normalize_runs(runs)
    sections = all_sections([v.record for v in views], extra_sections)
    tables = aggregate(views)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        "json": json.dumps(_report_json(views, tables, sections), indent=2, ensure_ascii=False, allow_nan=False),
        "md": markdown_report(views, tables, sections),
        "html": html_report(views, tables, sections),
    }
    paths: dict[str, Path] = {}
    for ext, text in texts.items():
        paths[ext] = out / f"report.{ext}"
        _atomic_write(paths[ext], text if text.endswith("\n") else text + "\n")
    return paths


# Registered report sections (each adds itself to SECTIONS on import).
from unlearnkit.reports import concept as _concept  # noqa: E402, F401
from unlearnkit.reports import concept_safety as _concept_safety  # noqa: E402, F401
from unlearnkit.reports import leaderboard as _leaderboard  # noqa: E402, F401
from unlearnkit.reports import relearn as _relearn  # noqa: E402, F401
from unlearnkit.reports import setting2 as _setting2  # noqa: E402, F401
from unlearnkit.reports import talk as _talk  # noqa: E402, F401
from unlearnkit.reports import wfnet as _wfnet  # noqa: E402, F401
