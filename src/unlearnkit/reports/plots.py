"""Report figures, rendered to PNG bytes.

Figures are built with matplotlib's object-oriented API (:class:`~matplotlib.figure.Figure` on an Agg
canvas), never through ``pyplot``: nothing opens a window, no global backend is switched (a user's
interactive session keeps its own), and no figure is left registered in pyplot's global state.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unlearnkit.reports._aggregate import RETRAIN, Row, ScenarioTable, metric_arrow

DPI = 100
RETRAIN_COLOR = "#d62728"
ORIGINAL_COLOR = "#555555"
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
            "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94")  # fmt: skip


@dataclass(frozen=True)
class Plot:
    """A rendered figure: PNG bytes and a caption (which also says what could not be drawn)."""

    png: bytes
    caption: str

    @property
    def data_uri(self) -> str:
        """``data:image/png;base64,...`` for embedding in HTML."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def to_png(fig: Figure) -> bytes:
    """Render ``fig`` with Agg to PNG bytes (no software/version metadata, so output is reproducible)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _finite_mean(row: Row, metric: str) -> float | None:
    m = row.mean(metric)
    return m if m is not None and math.isfinite(m) else None


def _std(row: Row, metric: str) -> float:
    s = row.stats[metric].std if metric in row.stats else None
    return s if s is not None and math.isfinite(s) else 0.0


def pick_metric(table: ScenarioTable, preferred: str, fallback: str) -> str | None:
    """``preferred`` if some row has a finite value for it, else ``fallback`` if so, else ``None``."""
    for name in (preferred, fallback):
        if any(_finite_mean(row, name) is not None for row in table.rows):
            return name
    return None


def row_colors(table: ScenarioTable) -> list[str]:
    """One colour per row, the same in every figure: red retrain, grey original, a palette for methods."""
    out, k = [], 0
    for row in table.rows:
        if row.kind == RETRAIN:
            out.append(RETRAIN_COLOR)
        elif row.kind == "original":
            out.append(ORIGINAL_COLOR)
        else:
            out.append(_PALETTE[k % len(_PALETTE)])
            k += 1
    return out


def _style(row: Row, color: str) -> dict[str, object]:
    if row.kind == RETRAIN:
        return {"fmt": "*", "color": color, "markersize": 17, "zorder": 5, "mec": "black", "mew": 0.6}
    return {"fmt": "s" if row.kind == "original" else "o", "color": color, "markersize": 8, "zorder": 4}


def forget_retain_scatter(table: ScenarioTable) -> Plot | None:
    """Forget accuracy (y) against retain accuracy (x) per method, error bars = std over seeds.

    Uses ``acc_forget_test``/``acc_retain_test`` when present, else ``acc_forget``/``acc_retain``. The
    retrained model is a large star with dotted guide lines: the closer a method sits to it, the better.
    Returns ``None`` when no row has both values.
    """
    xm = pick_metric(table, "acc_retain_test", "acc_retain")
    ym = pick_metric(table, "acc_forget_test", "acc_forget")
    if xm is None or ym is None:
        return None
    colors = row_colors(table)
    points = [(row, _finite_mean(row, xm), _finite_mean(row, ym), c) for row, c in zip(table.rows, colors, strict=True)]
    drawn = [(row, x, y, c) for row, x, y, c in points if x is not None and y is not None]
    if not drawn:
        return None
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.add_subplot()
    for row, x, y, color in drawn:
        style = _style(row, color)
        label = f"{row.label} (n={row.n_seeds})"
        ax.errorbar(x, y, xerr=_std(row, xm), yerr=_std(row, ym), label=label, capsize=3, elinewidth=1, **style)
        if row.kind == RETRAIN:
            ax.axvline(x, color=RETRAIN_COLOR, ls=":", lw=1, zorder=1)
            ax.axhline(y, color=RETRAIN_COLOR, ls=":", lw=1, zorder=1)
    ax.set_xlabel(f"{xm} {metric_arrow(xm)}".strip())
    ax.set_ylabel(f"{ym} {metric_arrow(ym)}".strip())
    ax.set_title(table.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(0.08)
    ax.legend(fontsize=7, loc="best", framealpha=0.85)
    fig.tight_layout()
    skipped = [row.label for row, x, y, _ in points if (x is None or y is None) and row.runs]
    caption = f"{ym} vs {xm}, mean ± std over seeds; the star is the retrained model."
    if skipped:
        caption += " Not plotted (no value): " + ", ".join(skipped) + "."
    return Plot(to_png(fig), caption)


def time_ratio_bars(table: ScenarioTable, metric: str = "time_ratio_vs_retrain") -> Plot | None:
    """Horizontal bars of ``metric`` (unlearning time / retraining time) per method, log scale.

    The retrain row is the dashed line at 1 rather than a bar. Non-positive values cannot be drawn on a
    log axis and are listed in the caption; lower error bars are clipped to stay positive. Returns
    ``None`` when no row has a positive value.
    """
    colors = row_colors(table)
    vals = [(row, _finite_mean(row, metric), c) for row, c in zip(table.rows, colors, strict=True)]
    vals = [(row, v, c) for row, v, c in vals if row.kind != RETRAIN and row.runs]
    drawn = [(row, v, c) for row, v, c in vals if v is not None and v > 0]
    if not drawn:
        return None
    fig = Figure(figsize=(6.4, 1.4 + 0.38 * len(drawn)))
    ax = fig.add_subplot()
    ys = list(range(len(drawn)))[::-1]
    means = [v for _, v, _ in drawn]
    stds = [_std(row, metric) for row, _, _ in drawn]
    lower = [min(s, 0.9 * m) for s, m in zip(stds, means, strict=True)]
    ax.barh(ys, means, xerr=[lower, stds], color=[c for _, _, c in drawn], capsize=3, height=0.6)
    ax.set_yticks(ys, [f"{row.label} (n={row.n_seeds})" for row, _, _ in drawn], fontsize=8)
    ax.set_xscale("log")
    ax.axvline(1.0, color=RETRAIN_COLOR, ls="--", lw=1.2, label="retrain = 1")
    for y, m, s in zip(ys, means, stds, strict=True):
        ax.annotate(f"{m:.3g}×", (m + s, y), xytext=(5, 0), textcoords="offset points", va="center", fontsize=7)
    lo, hi = min([*means, 1.0]), max([m + s for m, s in zip(means, stds, strict=True)] + [1.0])
    ax.set_xlim(lo / 3, hi * 3)
    ax.set_xlabel(f"{metric} (log scale) {metric_arrow(metric)}".strip())
    ax.set_title(table.title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    caption = f"{metric}: unlearning time relative to retraining (below 1 is cheaper), mean ± std over seeds."
    skipped = [row.label for row, v, _ in vals if v is None or v <= 0]
    if skipped:
        caption += " Not plotted (no positive value): " + ", ".join(skipped) + "."
    return Plot(to_png(fig), caption)


def scenario_plots(table: ScenarioTable) -> list[Plot]:
    """Every figure for one scenario table (possibly none)."""
    return [p for p in (forget_retain_scatter(table), time_ratio_bars(table)) if p is not None]
