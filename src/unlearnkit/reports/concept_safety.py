"""Report section: setting-3 safety awareness (HySAC's protocol) beside the talk-layout retrieval table.

One table per (dataset, model), so each method sits under its own original (the Euclidean CLIP, or the
hyperbolic ``…-meru`` model): awareness (unsafe text → unsafe image R@1, no traversal), the safety score and
the redirected retrieval with and without traversal, and the unsafe-detection AUROC from the distance to
the root. A figure a model cannot have (traversal and detection need a hyperbolic model) shows "n/a".
Reads stored records only (see :mod:`unlearnkit.concept.safety_metrics` for the definitions).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from unlearnkit.reports._aggregate import ORIGINAL, as_number, canonical, format_params
from unlearnkit.reports._section import Section, by_dataset_model, ok_run_of_kind, register_section
from unlearnkit.reports.html import html_table
from unlearnkit.reports.tables import markdown_table

TITLE = "Safety awareness in CLIP (setting 3): traversal, awareness, unsafe detection"
COLUMNS = [
    ("T→V R@1", "t2v_r1"),
    ("T→V R@1 trav", "t2v_r1_trav"),
    ("awareness T*→V* R@1", "awareness_r1"),
    ("T*→V∪V* R@1", "tstar_to_v_union_r1"),
    ("T*→V∪V* R@1 trav", "tstar_to_v_union_r1_trav"),
    ("V*→T∪T* R@1", "vstar_to_t_union_r1"),
    ("V*→T∪T* R@1 trav", "vstar_to_t_union_r1_trav"),
    ("unsafe T* ↓", "unsafe_rate_tstar"),
    ("unsafe T* trav ↓", "unsafe_rate_tstar_trav"),
    ("unsafe V* ↓", "unsafe_rate_vstar"),
    ("unsafe V* trav ↓", "unsafe_rate_vstar_trav"),
    ("safety score", "safety_score"),
    ("safety score trav", "safety_score_trav"),
    ("AUROC texts", "unsafe_auroc_text"),
    ("AUROC images", "unsafe_auroc_image"),
]
HEADERS = ("method", *(h for h, _ in COLUMNS))
KEYS = {m for _, m in COLUMNS}


def _table(dataset: str, model: str, runs: list[Mapping[str, Any]]) -> tuple[str, str]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault((str(r["method"]), canonical(r.get("params") or {})), []).append(r)
    variants: dict[str, list[dict[str, Any]]] = {}
    for group in groups.values():
        variants.setdefault(str(group[0]["method"]), []).append(dict(group[0].get("params") or {}))
    grid: list[list[Any]] = []
    for (method, _), group in sorted(groups.items(), key=lambda kv: (kv[0][0] != ORIGINAL, kv[0])):
        params = dict(group[0].get("params") or {})
        same = variants[method]
        differing = sorted(k for k in {k for p in same for k in p} if len({canonical(p.get(k)) for p in same}) > 1)
        label = f"{method} ({format_params(params, differing)})" if differing else method
        cells: list[Any] = []
        for _, metric in COLUMNS:
            nums = [as_number((r.get("metrics") or {}).get(metric)) for r in group]
            nums = [v for v in nums if v is not None]
            cells.append(f"{100 * sum(nums) / len(nums):.1f}" if nums else "n/a")
        grid.append([label, *cells])
    seeds = sorted({str(r.get("seed")) for r in runs})
    note = (f"Means over seeds {', '.join(seeds)}, in percent. 'trav': queries moved toward the root into the safe "
            "region of both modalities (the smaller 95th percentile of the validation safe texts' and images' "
            "distances to the root); "
            "AUROC: unsafe vs safe test items by distance to the root. n/a: not defined for this model "
            "(a Euclidean CLIP has no root).")  # fmt: skip
    md = f"### {dataset} · {model}\n\n{markdown_table(HEADERS, grid)}\n\n_{note}_"
    page = (f"<h3>{html.escape(dataset)} · {html.escape(model)}</h3>\n{html_table(HEADERS, grid)}\n"
            f'<p class="muted">{html.escape(note)}</p>')  # fmt: skip
    return md, page


@register_section("concept_safety")
def concept_safety(runs: list[Mapping[str, Any]]) -> Section | None:
    """The safety-awareness table(s), or ``None`` when no concept run recorded these metrics."""
    concept = [r for r in runs if ok_run_of_kind(r, "concept:") and KEYS & set(r.get("metrics") or {})]
    if not concept:
        return None
    parts = [_table(d, m, group) for (d, m), group in by_dataset_model(concept)]
    intro = (
        "HySAC's safety-aware view of the same setting-3 runs: does the model still link unsafe text to unsafe "
        "images (awareness), can an unsafe query be redirected at inference (traversal), and does the distance to "
        "the root detect unsafe content (AUROC)? Each method is listed under its own original."
    )
    return Section(
        title=TITLE,
        markdown=intro + "\n\n" + "\n\n".join(md for md, _ in parts),
        html=f"<p>{html.escape(intro)}</p>\n" + "\n".join(page for _, page in parts),
    )
