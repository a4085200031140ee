"""Report section "Relearning": forget accuracy before → after a relearning attack, beside retrain's.

One table per scenario whose runs carry the relearning metrics (:mod:`unlearnkit.metrics.relearn`):

* class requests: forget-test accuracy before the attack (``acc_forget_test``) → after it
  (``relearn_acc_forget_test``), retrain's after-attack value (the floor: a model that never saw the class
  relearns it this fast) and the gap to it, RelearnTime (``relearn_time``), and the linear probe
  (``probe_acc_forget``) with its gap to retrain's;
* random requests: the same for RTT (accuracy on the held-out forget half before → after attacking with
  the other half, ``relearn_rtt_acc``).

When the runs carry the optional variants (``relearn.forget_only`` / ``relearn.retain_only``), their
after-attack values get a column each. Values are means over the runs (seeds) of each row. The HTML report adds
the recovery curves (accuracy per attack step, mean over attack seeds and runs), retrain in red, with a dashed
line at the step budget when the attack went on beyond it (``relearn.extra_steps``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from unlearnkit.reports._aggregate import RETRAIN, Row, ScenarioTable, aggregate
from unlearnkit.reports._section import Section, register_section
from unlearnkit.reports.html import html_table
from unlearnkit.reports.plots import Plot, row_colors, to_png
from unlearnkit.reports.tables import markdown_table

TITLE = "Relearning"
CURVE = "relearn_curve"
HEADERS = (
    "method", "forget acc before", "after attack", "retrain after", "gap to retrain (after)", "RelearnTime [steps]",
    "probe", "probe gap to retrain",
)  # fmt: skip
#: optional attack variants: metric -> column header (a column when some run of the scenario carries it)
VARIANTS = {"relearn_forget_only_acc": "forget-only attack", "relearn_retain_only_acc": "retain-only attack"}
NOTE = (
    "Attack: a copy of each model is fine-tuned (Adam, training lr) on batches of k forget images plus retain "
    "images; class requests measure forget-test accuracy, random requests use RTT (attack one half of the "
    "forget set, measure the other). Retrain's after-attack value is the floor; a method far above it hid the "
    "forgotten data rather than removing it. Probe: logistic regression on penultimate features, fit on "
    "retain images plus k forget images. Optional columns (relearn.forget_only / retain_only): the same attack on "
    "batches of the k forget images alone, or of retain images only (zero forget images)."
)


def _curves(row: Row) -> list[list[float]]:
    out = []
    for run in row.runs:
        c = run.metrics.get(CURVE)
        if isinstance(c, Mapping) and isinstance(c.get("mean"), list) and c["mean"]:
            out.append([float(v) for v in c["mean"]])
    return out


def _mean_curve(row: Row) -> list[float] | None:
    curves = _curves(row)
    if not curves:
        return None
    n = min(len(c) for c in curves)
    return [sum(c[i] for c in curves) / len(curves) for i in range(n)]


def _gap(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _fmt(v: float | None, signed: bool = False) -> str | None:
    if v is None or not math.isfinite(v):
        return None
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _table_rows(table: ScenarioTable) -> tuple[str, list[dict[str, Any]]] | None:
    """(kind, rows) of one scenario, or ``None`` when its runs carry no relearning figures."""
    if any(r.mean("relearn_acc_forget_test") is not None for r in table.rows):
        kind, after = "class", "relearn_acc_forget_test"
    elif any(r.mean("relearn_rtt_acc") is not None for r in table.rows):
        kind, after = "rtt", "relearn_rtt_acc"
    else:
        return None
    ref = table.retrain
    ref_after = ref.mean(after) if ref is not None else None
    ref_probe = ref.mean("probe_acc_forget") if ref is not None else None
    rows = []
    for row in table.rows:
        if not row.runs:
            continue
        curve = _mean_curve(row)
        before = row.mean("acc_forget_test") if kind == "class" else (curve[0] if curve else None)
        a, probe = row.mean(after), row.mean("probe_acc_forget")
        rows.append({
            "method": row.label, "kind": row.kind, "before": before, "after": a, "retrain_after": ref_after,
            "gap_after": None if row.kind == RETRAIN else _gap(a, ref_after),
            "relearn_time": row.mean("relearn_time") if kind == "class" else None,
            "probe": probe, "probe_gap": None if row.kind == RETRAIN else _gap(probe, ref_probe),
            "curve": curve, "n_runs": row.n_seeds, "budget": _budget(row),
            **{m: row.mean(m) for m in VARIANTS},
        })  # fmt: skip
    return kind, rows


def _budget(row: Row) -> int | None:
    """The attack's step budget recorded with the row's curves (``None``: not recorded, the curve's end)."""
    for run in row.runs:
        c = run.metrics.get(CURVE)
        if isinstance(c, Mapping) and isinstance(c.get("budget"), int):
            return int(c["budget"])
    return None


def recovery_plot(table: ScenarioTable) -> Plot | None:
    """Accuracy per attack step for every row of ``table`` (retrain red, original grey)."""
    fig = Figure(figsize=(8.0, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    budget: int | None = None
    for row, color in zip(table.rows, row_colors(table), strict=True):
        curve = _mean_curve(row)
        if curve is None:
            continue
        b = _budget(row)
        if b is not None and b < len(curve) - 1:
            budget = b
        width = 2.5 if row.kind == RETRAIN else 1.2
        ax.plot(range(len(curve)), curve, color=color, linewidth=width, label=row.label)
        drawn += 1
    if not drawn:
        return None
    if budget is not None:  # the curves go on beyond the budget: mark where the after-attack values are read
        ax.axvline(budget, color="black", linestyle="--", linewidth=1.0, label=f"budget ({budget} steps)")
    ax.set_xlabel("attack step")
    ax.set_ylabel("forget accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 + (drawn > 12))
    fig.tight_layout()
    return Plot(to_png(fig), f"{table.title}: recovery under the relearning attack (mean over seeds)")


@register_section("relearning")
def relearning(runs: list[Mapping[str, Any]]) -> Section | None:
    """The "Relearning" section, or ``None`` when no run carries relearning figures."""
    md_parts, html_parts, data = [], [], []
    for table in aggregate(runs):
        got = _table_rows(table)
        if got is None:
            continue
        kind, rows = got
        extra = [m for m in VARIANTS if any(r[m] is not None for r in rows)]
        headers = (*HEADERS, *(VARIANTS[m] for m in extra))
        grid = [
            [r["method"], _fmt(r["before"]), _fmt(r["after"]), _fmt(r["retrain_after"]), _fmt(r["gap_after"], True),
             None if r["relearn_time"] is None else f"{r['relearn_time']:.1f}", _fmt(r["probe"]),
             _fmt(r["probe_gap"], True), *(_fmt(r[m]) for m in extra)]
            for r in rows
        ]  # fmt: skip
        what = "forget-test accuracy" if kind == "class" else "RTT: accuracy on the held-out forget half"
        md_parts.append(f"### {table.title}\n\n_{what}_\n\n{markdown_table(headers, grid)}")
        block = f'<h3>{html.escape(table.title)}</h3>\n<p class="caption">{html.escape(what)}</p>\n'
        block += html_table(headers, grid)
        plot = recovery_plot(table)
        if plot is not None:
            block += f'\n<figure><img src="{plot.data_uri}" alt="{html.escape(plot.caption)}">'
            block += f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>"
        html_parts.append(block)
        data.append({"scenario": table.title, "kind": kind, "rows": rows})
    if not data:
        return None
    md = f"_{NOTE}_\n\n" + "\n\n".join(md_parts)
    body = f'<p class="caption">{html.escape(NOTE)}</p>\n' + "\n".join(html_parts)
    return Section(title=TITLE, markdown=md, html=body, data=data)


# -- setting 3: the CLIP relearning attack -----------------------------------------------------------------------

CLIP_TITLE = "Relearning in CLIP (setting 3)"
#: (label, metric before the attack, metric after it)
CLIP_PAIRS = (
    ("unsafe T*", "unsafe_rate_tstar", "relearn_unsafe_rate_tstar"),
    ("unsafe V*", "unsafe_rate_vstar", "relearn_unsafe_rate_vstar"),
    ("T*→V∪V* R@1", "tstar_to_v_union_r1", "relearn_tstar_to_v_union_r1"),
    ("V*→T∪T* R@1", "vstar_to_t_union_r1", "relearn_vstar_to_t_union_r1"),
)
CLIP_HEADERS = ("method", *(f"{label} {when}" for label, _, _ in CLIP_PAIRS for when in ("before", "after")))
CLIP_NOTE = (
    "Attack: a copy of each CLIP is fine-tuned with CLIP's contrastive loss on k unsafe (caption, image) training "
    "pairs for a few Adam steps (relearn: k, steps, seeds, lr); the test quadruplets are scored before and after. "
    "No retrained model exists in setting 3: compare a method's after-attack values with the original's (first "
    "row). Unsafe T*/V*: fraction of unsafe queries whose top-1 result is unsafe (lower is safer); R@1: the safe "
    "twin retrieved (higher is safer). Means over seeds."
)


def _clip_rows(runs: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    from unlearnkit.reports._aggregate import ORIGINAL, as_number, canonical, format_params

    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault((str(r["method"]), canonical(r.get("params") or {})), []).append(r)
    names = [m for m, _ in groups]
    rows = []
    for (method, _), group in sorted(groups.items(), key=lambda kv: (kv[0][0] != ORIGINAL, kv[0])):
        label = method
        if names.count(method) > 1:
            label = f"{method} ({format_params(dict(group[0].get('params') or {}))})"
        values: dict[str, float | None] = {}
        for _, before, after in CLIP_PAIRS:
            for m in (before, after):
                nums = [v for v in (as_number((r.get("metrics") or {}).get(m)) for r in group) if v is not None]
                values[m] = sum(nums) / len(nums) if nums else None
        rows.append({"method": label, **values})
    return rows


@register_section("relearning_concept")
def clip_relearning(runs: list[Mapping[str, Any]]) -> Section | None:
    """The setting-3 relearning table(s), or ``None`` when no concept run carries the attack's figures."""
    from unlearnkit.reports._section import by_dataset_model, ok_run_of_kind

    concept = [r for r in runs if ok_run_of_kind(r, "concept:")]
    concept = [r for r in concept if any(isinstance((r.get("metrics") or {}).get(a), int | float)
                                         for _, _, a in CLIP_PAIRS)]  # fmt: skip
    if not concept:
        return None
    md_parts, html_parts, data = [], [], []
    for (dataset, model), group in by_dataset_model(concept):
        rows = _clip_rows(group)
        grid = [[r["method"], *(_fmt(r[m]) for _, b, a in CLIP_PAIRS for m in (b, a))] for r in rows]
        md_parts.append(f"### {dataset} · {model}\n\n{markdown_table(CLIP_HEADERS, grid)}")
        html_parts.append(f"<h3>{html.escape(dataset)} · {html.escape(model)}</h3>\n{html_table(CLIP_HEADERS, grid)}")
        data.append({"dataset": dataset, "model": model, "rows": rows})
    return Section(
        title=CLIP_TITLE,
        markdown=f"_{CLIP_NOTE}_\n\n" + "\n\n".join(md_parts),
        html=f'<p class="caption">{html.escape(CLIP_NOTE)}</p>\n' + "\n".join(html_parts),
        data=data,
    )
