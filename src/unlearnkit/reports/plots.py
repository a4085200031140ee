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
from matplotlib.ticker import NullFormatter

from unlearnkit.reports._aggregate import RETRAIN, Row, ScenarioTable, metric_arrow

DPI = 100
RETRAIN_COLOR = "#d62728"
ORIGINAL_COLOR = "#555555"
#: method colours: distinct hues (no red or grey, kept for retrain and the original), none repeated
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
            "#000080", "#008080", "#b8860b", "#4b0082", "#556b2f")  # fmt: skip


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
    return [style[0] for style in row_styles(table)]


#: marker per method, cycled with a period prime to the palette's so (colour, marker) pairs stay distinct
_MARKERS = ("o", "^", "D", "v", "P", "X", "<", ">", "h", "p", "d")


def row_styles(table: ScenarioTable) -> list[tuple[str, str]]:
    """``(colour, marker)`` per row: a red star for retrain, a grey square for the original, and for the
    methods a distinct colour and a distinct marker each (pairs never repeat within a table)."""
    out, k = [], 0
    for row in table.rows:
        if row.kind == RETRAIN:
            out.append((RETRAIN_COLOR, "*"))
        elif row.kind == "original":
            out.append((ORIGINAL_COLOR, "s"))
        else:
            out.append((_PALETTE[k % len(_PALETTE)], _MARKERS[k % len(_MARKERS)]))
            k += 1
    return out


#: points closer than this (in axis units, both coordinates) share one label stack
OVERLAP = 0.04
#: vertical spacing of stacked labels, in points
LABEL_STEP = 10


def label_offsets(points: list[tuple[float, float]]) -> list[tuple[int, int]]:
    """Text offsets (in points) of each point's label: right of the point, or left of it past x = 0.75 (so
    it stays inside the axes); points within :data:`OVERLAP` of an earlier one get the next slot of its
    stack (upwards, or downwards near the top), so overlapping points keep readable, separate labels."""
    anchors: list[tuple[float, float, int]] = []  # (x, y, labels so far)
    out = []
    for x, y in points:
        n = 0
        for i, (ax_, ay, k) in enumerate(anchors):
            if abs(x - ax_) <= OVERLAP and abs(y - ay) <= OVERLAP:
                anchors[i], n = (ax_, ay, k + 1), k
                break
        else:
            anchors.append((x, y, 1))
        dx = -8 if x > 0.75 else 8
        dy = 4 + LABEL_STEP * n if y < 0.7 else -10 - LABEL_STEP * n
        out.append((dx, dy))
    return out


def scatter_figure(table: ScenarioTable) -> tuple[Figure, list[str], str, str] | None:
    """The forget/retain figure (see :func:`forget_retain_scatter`), the labels of rows without values, and
    the two metric names; ``None`` when no row has both values."""
    xm = pick_metric(table, "acc_retain_test", "acc_retain")
    ym = pick_metric(table, "acc_forget_test", "acc_forget")
    if xm is None or ym is None:
        return None
    styles = row_styles(table)
    points = [
        (row, _finite_mean(row, xm), _finite_mean(row, ym), st) for row, st in zip(table.rows, styles, strict=True)
    ]
    drawn = [(row, x, y, st) for row, x, y, st in points if x is not None and y is not None]
    if not drawn:
        return None
    fig = Figure(figsize=(8.4, 5.0))
    ax = fig.add_subplot()
    offsets = label_offsets([(x, y) for _, x, y, _ in drawn])
    for (row, x, y, (color, marker)), off in zip(drawn, offsets, strict=True):
        big = row.kind == RETRAIN
        bars = ax.errorbar(
            x, y, xerr=_std(row, xm), yerr=_std(row, ym), label=f"{row.label} (n={row.n_seeds})", fmt=marker,
            color=color, markersize=15 if big else 8, mec="black" if big else color, mew=0.6, alpha=0.9,
            zorder=5 if big else 4, capsize=3, elinewidth=1, clip_on=False,
        )  # fmt: skip
        for part in (*bars[1], *bars[2]):  # the marker may sit on the frame (1.0); the std bars stay inside it
            part.set_clip_on(True)
        ax.annotate(row.label, (x, y), xytext=off, textcoords="offset points", fontsize=7, color=color, zorder=6,
                    ha="right" if off[0] < 0 else "left", annotation_clip=False)  # fmt: skip
        if big:
            ax.axvline(x, color=RETRAIN_COLOR, ls=":", lw=1, zorder=1)
            ax.axhline(y, color=RETRAIN_COLOR, ls=":", lw=1, zorder=1)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel(f"{xm} {metric_arrow(xm)}".strip())
    ax.set_ylabel(f"{ym} {metric_arrow(ym)}".strip())
    ax.set_title(table.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, framealpha=0.85)
    fig.tight_layout()
    skipped = [row.label for row, x, y, _ in points if (x is None or y is None) and row.runs]
    return fig, skipped, xm, ym


def forget_retain_scatter(table: ScenarioTable) -> Plot | None:
    """Forget accuracy (y) against retain accuracy (x) per method, error bars = std over seeds.

    Uses ``acc_forget_test``/``acc_retain_test`` when present, else ``acc_forget``/``acc_retain``. Both
    axes span [0, 1]; each method has its own colour and marker and is labelled beside its point (labels
    of overlapping points are stacked); the legend sits outside the axes. The retrained model is a large
    star with dotted guide lines: the closer a method sits to it, the better. Returns ``None`` when no
    row has both values.
    """
    built = scatter_figure(table)
    if built is None:
        return None
    fig, skipped, xm, ym = built
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
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels collide with the major ones
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
