"""Report section: WF-Net's deletion/insertion curves (spec ``methods.md`` §1.5), as the talk shows them.

For every WF-Net configuration in the runs (dataset, model, hyperparameters), the section averages the
``wfnet_deletion_curves`` stored with each run (one run per seed and forgotten class) and shows:

* a figure (HTML; a base64 PNG) with two panels, deletion and insertion: test accuracy on the forgotten
  class(es) (solid) and on the other classes (dashed) against the fraction of filters removed / restored,
  for WF-Net's α ranking and the random and weight-magnitude baselines;
* a table of the areas under those curves, mean ± std over the runs (Markdown and HTML).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from unlearnkit.metrics.wfnet import CURVES_METRIC
from unlearnkit.reports._aggregate import canonical, format_params
from unlearnkit.reports._section import Section, register_section
from unlearnkit.reports.html import html_table
from unlearnkit.reports.plots import Plot, to_png
from unlearnkit.reports.tables import format_mean_std, markdown_table

METHOD = "wfnet"
RANKING_STYLE = {  # ranking -> (label, colour)
    "alpha": ("WF-Net α (1 − α)", "#1f77b4"),
    "magnitude": ("weight magnitude", "#ff7f0e"),
    "random": ("random", "#7f7f7f"),
}
#: AUC columns: (curve key, header)
AUC_COLUMNS = (
    ("deletion_forget", "deletion AUC, forgotten ↓"),
    ("deletion_retain", "deletion AUC, kept ↑"),
    ("insertion_forget", "insertion AUC, forgotten ↑"),
    ("insertion_retain", "insertion AUC, kept ↓"),
)


def _curves_of(run: Mapping[str, Any]) -> Mapping[str, Any] | None:
    metrics = run.get("metrics") or {}
    value = metrics.get(CURVES_METRIC) if isinstance(metrics, Mapping) else None
    if isinstance(value, Mapping) and isinstance(value.get("curves"), Mapping) and "fractions" in value:
        return value
    return None


def _group(runs: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """WF-Net runs with curves, grouped by (dataset, model, params, fractions)."""
    groups: dict[str, dict[str, Any]] = {}
    for run in runs:
        curves = _curves_of(run)
        if curves is None:
            continue
        scenario = run.get("scenario") or {}
        dataset = str(scenario.get("dataset", "?")) if isinstance(scenario, Mapping) else "?"
        params = dict(run.get("params") or {})
        key = canonical([dataset, run.get("model"), params, list(curves["fractions"])])
        g = groups.setdefault(key, {"dataset": dataset, "model": str(run.get("model") or "?"), "params": params,
                                    "fractions": [float(f) for f in curves["fractions"]], "runs": []})  # fmt: skip
        g["runs"].append(curves)
    return groups


def _mean_curves(g: dict[str, Any]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Curves averaged over the group's runs (rankings present in every run)."""
    rankings = [r for r in RANKING_STYLE if all(r in c["curves"] for c in g["runs"])]
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in rankings:
        out[r] = {}
        for mode in ("deletion", "insertion"):
            out[r][mode] = {
                subset: np.mean([c["curves"][r][mode][subset] for c in g["runs"]], axis=0).tolist()
                for subset in ("forget", "retain")
            }
    return out


def _auc_rows(g: dict[str, Any], rankings: list[str]) -> tuple[list[list[str]], dict[str, dict[str, Any]]]:
    rows, data = [], {}
    for r in rankings:
        cells, data[r] = [RANKING_STYLE[r][0]], {}
        for col, _ in AUC_COLUMNS:
            vals = [float(c["auc"][r][col]) for c in g["runs"] if r in c.get("auc", {})]
            mean = float(np.mean(vals)) if vals else None
            std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
            cells.append(format_mean_std(mean, std) if mean is not None else "—")
            data[r][col] = {"mean": mean, "std": std, "n": len(vals)}
        rows.append(cells)
    return rows, data


def deletion_plot(fractions: list[float], curves: dict[str, dict[str, dict[str, list[float]]]], title: str) -> Plot:
    """The two-panel deletion/insertion figure (accuracy vs fraction of filters removed / restored)."""
    fig = Figure(figsize=(10.0, 4.0))
    axes = fig.subplots(1, 2, sharey=True)
    xlabels = ("fraction of filters removed", "fraction of filters restored")
    for ax, mode, xlabel in zip(axes, ("deletion", "insertion"), xlabels, strict=True):
        for r, (label, color) in RANKING_STYLE.items():
            if r not in curves:
                continue
            ax.plot(fractions, curves[r][mode]["forget"], "-o", color=color, ms=3, label=f"{label}: forgotten")
            ax.plot(fractions, curves[r][mode]["retain"], "--", color=color, label=f"{label}: kept")
        ax.set_title(mode, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[1].legend(fontsize=7, loc="best", framealpha=0.85)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    caption = (
        "Test accuracy on the forgotten class (solid) and on the other classes (dashed) while filters are "
        "removed from the original model (deletion) or restored from an all-zero one (insertion), most "
        "important first: by WF-Net's 1 − α, by weight magnitude, or at random."
    )
    return Plot(to_png(fig), caption)


def _metric_auc_rows(runs: list[Mapping[str, Any]]) -> dict[str, tuple[dict[str, Any], list[str]]]:
    """Without stored curves: the α-ranking AUCs from the runs' numeric ``wfnet_*_auc_*`` metrics, per group."""
    groups: dict[str, tuple[dict[str, Any], dict[str, list[float]]]] = {}
    for run in runs:
        metrics = run.get("metrics") or {}
        scenario = run.get("scenario") or {}
        dataset = str(scenario.get("dataset", "?")) if isinstance(scenario, Mapping) else "?"
        head = {"dataset": dataset, "model": str(run.get("model") or "?"), "params": dict(run.get("params") or {})}
        _, vals = groups.setdefault(canonical(head), (head, {col: [] for col, _ in AUC_COLUMNS}))
        for col, _ in AUC_COLUMNS:
            mode, subset = col.split("_")
            v = metrics.get(f"wfnet_{mode}_auc_{subset}") if isinstance(metrics, Mapping) else None
            if isinstance(v, int | float) and not isinstance(v, bool):
                vals[col].append(float(v))
    out = {}
    for key, (head, vals) in groups.items():
        if any(vals.values()):
            cells = [RANKING_STYLE["alpha"][0]] + [
                format_mean_std(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None) if v else "—"
                for v in vals.values()
            ]
            out[key] = (head, cells)
    return out


INTRO = (
    "Filters ranked by importance for the forgotten class (spec §1.5): deletion removes them from the "
    "original model, insertion restores them to an all-zero one. A class-specific ranking makes the "
    "forgotten class's accuracy fall fast under deletion (low AUC) while the other classes hold."
)
TITLE = "WF-Net: filter deletion and insertion"
HEADERS = ["ranking"] + [h for _, h in AUC_COLUMNS]


def _without_curves(wf_runs: list[Mapping[str, Any]]) -> Section:
    why = (
        f"not computed: the curves: no WF-Net run stores `{CURVES_METRIC}` (it is stored when the evaluation "
        "keeps structured metric values and every metric, or this one, is evaluated on a class request)."
    )
    md, parts = [why, ""], [f"<p>{html.escape(why)}</p>"]
    for head, cells in _metric_auc_rows(wf_runs).values():
        name = f"{head['dataset']} · {head['model']} · {METHOD}"
        md += [f"### {name}", "", markdown_table(HEADERS, [cells]), ""]
        parts += [f"<h3>{html.escape(name)}</h3>", html_table(HEADERS, [cells])]
    return Section(title=TITLE, markdown="\n".join(md).rstrip(), html="\n".join(parts))


@register_section("wfnet_deletion")
def wfnet_deletion_section(runs: list[Mapping[str, Any]]) -> Section | None:
    """The deletion/insertion section, or ``None`` when no run is a WF-Net run."""
    wf_runs = [r for r in runs if r.get("method") == METHOD and r.get("status", "ok") == "ok"]
    if not wf_runs:
        return None
    groups = _group(wf_runs)
    if not groups:
        return _without_curves(wf_runs)
    md, parts, data = [], [], []
    for g in groups.values():
        curves = _mean_curves(g)
        rows, auc_data = _auc_rows(g, list(curves))
        name = f"{g['dataset']} · {g['model']} · {METHOD}"
        params = format_params(g["params"])
        note = f"Mean over {len(g['runs'])} runs (seeds × forgotten classes); {params or 'default parameters'}."
        md += [f"### {name}", "", note, "", markdown_table(HEADERS, rows), "",
               "_The curves are plotted in report.html._", ""]  # fmt: skip
        parts.append(f"<h3>{html.escape(name)}</h3>")
        parts.append(f'<p class="caption">{html.escape(note)}</p>')
        if curves:
            plot = deletion_plot(g["fractions"], curves, name)
            parts.append(
                f'<div class="figures"><figure><img src="{plot.data_uri}" alt="{html.escape(plot.caption)}">'
                f"<figcaption>{html.escape(plot.caption)}</figcaption></figure></div>"
            )
        parts.append(html_table(HEADERS, rows))
        data.append({"dataset": g["dataset"], "model": g["model"], "params": g["params"], "n_runs": len(g["runs"]),
                     "fractions": g["fractions"], "mean_curves": curves, "auc": auc_data})  # fmt: skip
    return Section(
        title=TITLE,
        markdown=INTRO + "\n\n" + "\n".join(md).rstrip(),
        html=f"<p>{html.escape(INTRO)}</p>\n" + "\n".join(parts),
        data=data,
    )
