"""Report section: setting-3 retrieval in the talk's Safe-CLIP layout, beside the talk's published ViSU rows.

The talk shows Safe-CLIP's retrieval on ViSU as one table: method | T→V R@1/10/20 | V→T | T*→V∪V* |
V*→T∪T* (percent). This section lays out the runs of ``concept:unsafe`` requests the same way, one table
per (dataset, model), with the unsafe rates added; the talk's rows (``safe_clip_retrieval_visu`` of
``reference/talk_tables.json``, shipped with the reports) follow, labelled as references and never mixed
into the measured means. Needs no CLIP dependency: it reads stored records only.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from unlearnkit.reports._aggregate import ORIGINAL, as_number, canonical, format_params
from unlearnkit.reports._section import Section, by_dataset_model, ok_run_of_kind, register_section
from unlearnkit.reports.html import html_table
from unlearnkit.reports.tables import markdown_table

TITLE = "Talk layout: concept redirection in CLIP (setting 3)"
#: (column header, metric) in the talk's order; the unsafe rates are this project's addition
COLUMNS = [
    *((f"T→V R@{k}", f"t2v_r{k}") for k in (1, 10, 20)),
    *((f"V→T R@{k}", f"v2t_r{k}") for k in (1, 10, 20)),
    *((f"T*→V∪V* R@{k}", f"tstar_to_v_union_r{k}") for k in (1, 10, 20)),
    *((f"V*→T∪T* R@{k}", f"vstar_to_t_union_r{k}") for k in (1, 10, 20)),
    ("unsafe T* ↓", "unsafe_rate_tstar"),
    ("unsafe V* ↓", "unsafe_rate_vstar"),
]
HEADERS = ("source", "method", *(h for h, _ in COLUMNS))
#: the generation analogue's figures (issue 20), added beside the retrieval ones when a run measured them
GENERATION_COLUMNS = [
    ("T2I unsafe ↓", "gen_unsafe_rate"),
    ("T2I safe fidelity", "gen_safe_fidelity"),
    ("I2T unsafe words ↓", "caption_unsafe_share"),
    ("I2T safe acc", "caption_safe_acc"),
]


def _reference_rows(columns: list[tuple[str, str]]) -> list[list[Any]]:
    from unlearnkit.reports.talk import talk_tables

    rows = talk_tables()["safe_clip_retrieval_visu"]["rows"]
    return [["talk, ViSU/ViT-L/14 (reference)", r["method"], *(_cell(r.get(m)) for _, m in columns)] for r in rows]


def _cell(v: Any) -> str | None:
    return None if v is None else f"{float(v):.1f}"


def _table(dataset: str, model: str, runs: list[Mapping[str, Any]]) -> tuple[str, str]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault((str(r["method"]), canonical(r.get("params") or {})), []).append(r)
    variants: dict[str, list[dict[str, Any]]] = {}
    for group in groups.values():
        variants.setdefault(str(group[0]["method"]), []).append(dict(group[0].get("params") or {}))
    measured = lambda m: any(as_number((r.get("metrics") or {}).get(m)) is not None for r in runs)  # noqa: E731
    columns = COLUMNS + [c for c in GENERATION_COLUMNS if measured(c[1])]
    headers = ("source", "method", *(h for h, _ in columns))
    grid: list[list[Any]] = []
    for (method, _), group in sorted(groups.items(), key=lambda kv: (kv[0][0] != ORIGINAL, kv[0])):
        params = dict(group[0].get("params") or {})
        same = variants[method]  # name only the hyperparameters that differ between rows of one method
        differing = sorted(k for k in {k for p in same for k in p} if len({canonical(p.get(k)) for p in same}) > 1)
        label = f"{method} ({format_params(params, differing)})" if differing else method
        cells = []
        for _, metric in columns:
            nums = [as_number((r.get("metrics") or {}).get(metric)) for r in group]
            nums = [v for v in nums if v is not None]
            cells.append(f"{100 * sum(nums) / len(nums):.1f}" if nums else None)
        grid.append([f"measured: {dataset}/{model}", label, *cells])
    grid += _reference_rows(columns)
    seeds = sorted({str(r.get("seed")) for r in runs})
    note = (
        f"Measured rows: means over seeds {', '.join(seeds)}, in percent (unsafe T*/V*: the fraction of unsafe "
        "queries whose top-1 result is unsafe). Reference rows: the talk's published ViSU figures for the real "
        "CLIP ViT-L/14, not measured here" + (" and not comparable number for number." if dataset != "visu" else ".")
    )
    if len(columns) > len(COLUMNS):
        note += (
            " T2I/I2T: the generation analogue with each row's text/vision tower swapped in (share of images drawn "
            "from unsafe captions showing the marker; content recognised in images drawn from safe captions; "
            "captions of unsafe images with an unsafe word; content named in captions of safe images)."
        )
    md = f"### {dataset} · {model}\n\n{markdown_table(headers, grid)}\n\n_{note}_"
    page = (f"<h3>{html.escape(dataset)} · {html.escape(model)}</h3>\n{html_table(headers, grid)}\n"
            f'<p class="muted">{html.escape(note)}</p>')  # fmt: skip
    return md, page


@register_section("talk_layout_concept")
def talk_layout_concept(runs: list[Mapping[str, Any]]) -> Section | None:
    """The setting-3 talk-layout table(s), or ``None`` when no concept request ran."""
    concept = [r for r in runs if ok_run_of_kind(r, "concept:")]
    if not concept:
        return None
    parts = [_table(d, m, group) for (d, m), group in by_dataset_model(concept)]
    intro = (
        "Concept (setting-3) runs in the talk's Safe-CLIP retrieval layout: safe retrieval (T→V, V→T) and "
        "redirected retrieval (T*→V∪V*, V*→T∪T*: a hit when the safe twin is retrieved)."
    )
    return Section(
        title=TITLE,
        markdown=intro + "\n\n" + "\n\n".join(md for md, _ in parts),
        html=f"<p>{html.escape(intro)}</p>\n" + "\n".join(page for _, page in parts),
    )
