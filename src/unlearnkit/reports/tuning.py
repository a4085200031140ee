"""The tuning sections of a report: the trials of ``unlearnkit tune`` and a "tuned vs defaults" leaderboard.

Built from the store's tuning tables (``tune_studies``, ``tune_trials``; see
:mod:`unlearnkit.experiments.tune`) and its runs, never from the live registry:

* **Trials** — per method: trials by state, the proxy objective of the defaults (trial 0) and of the best
  feasible trial, its time ratio, the tuned values and the most important parameter (Optuna's importance
  evaluator, computed when the tuning finished); in HTML, the best objective so far over the trials and a
  parameter-importance chart.
* **Tuned vs defaults** — on the *evaluated* requests (the config's, never tuned on), per request kind: each
  method's mean |gap| to retrain at its defaults and at the tuned values, computed as the leaderboard does
  (``mean(method) − mean(retrain)`` over seeds, per scenario; mean |gap| over the accuracies; mean over
  scenarios), and the improvement (positive: tuning helped).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from unlearnkit.reports._aggregate import canonical, format_params
from unlearnkit.reports._section import Section
from unlearnkit.reports.html import html_table
from unlearnkit.reports.leaderboard import CLASS_GAP_METRICS, SAMPLE_GAP_METRICS, request_kind
from unlearnkit.reports.plots import Plot, to_png
from unlearnkit.reports.tables import markdown_table

_CLASS_LEVEL = ("class", "subclass", "group")


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/c" if v is None else f"{v:.{digits}f}"


def gap_by_kind(runs: Sequence[Mapping[str, Any]], method: str, params: Mapping[str, Any]) -> dict[str, float]:
    """Request kind -> the leaderboard's mean |gap| to retrain of ``method`` at exactly ``params`` (ok runs)."""
    want = canonical(dict(params))
    by_scenario: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for r in runs:
        if r.get("status", "ok") != "ok":
            continue
        # one scenario table = the scenario without its seed, and the model (seeds are aggregated)
        sc = canonical([{k: v for k, v in r.get("scenario", {}).items() if k != "seed"}, r.get("model")])
        side = "retrain" if r.get("method") == "retrain" else (
            "method" if r.get("method") == method and canonical(r.get("params", {})) == want else None)  # fmt: skip
        if side:
            by_scenario.setdefault(sc, {}).setdefault(side, []).append(r)
    per_kind: dict[str, list[float]] = {}
    for sides in by_scenario.values():
        if "retrain" not in sides or "method" not in sides:
            continue
        kind = request_kind(sides["method"][0].get("scenario", {}))
        names = CLASS_GAP_METRICS if kind in _CLASS_LEVEL else SAMPLE_GAP_METRICS
        gaps = []
        for m in names:
            a = [x for x in (_num(r.get("metrics", {}).get(m)) for r in sides["method"]) if x is not None]
            b = [x for x in (_num(r.get("metrics", {}).get(m)) for r in sides["retrain"]) if x is not None]
            if not a or not b:
                break
            gaps.append(abs(sum(a) / len(a) - sum(b) / len(b)))
        else:
            per_kind.setdefault(kind, []).append(sum(gaps) / len(gaps))
    return {k: sum(v) / len(v) for k, v in per_kind.items()}


def _progress_plot(trials: Sequence[Mapping[str, Any]], studies: Sequence[Mapping[str, Any]]) -> Plot | None:
    fig = Figure(figsize=(7.5, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    for st in studies:
        mine = [t for t in trials if t["study"] == st["study"] and t["state"] == "COMPLETE" and _num(t["value"])]
        if not mine:
            continue
        xs, ys, best = [], [], math.inf
        for t in sorted(mine, key=lambda t: t["number"]):
            best = min(best, float(t["value"]))
            xs.append(t["number"])
            ys.append(best)
        ax.step(xs, ys, where="post", label=st["method"])
        drawn += 1
    if not drawn:
        return None
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("best proxy objective so far (mean |gap|)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return Plot(to_png(fig), "best proxy objective over the trials, per method (lower is better)")


def _importance_plot(studies: Sequence[Mapping[str, Any]]) -> Plot | None:
    rows = [(st["method"], st.get("importance") or {}) for st in studies if st.get("importance")]
    if not rows:
        return None
    labels, values, colors = [], [], []
    for k, (method, imp) in enumerate(rows):
        for p, v in sorted(imp.items(), key=lambda kv: -kv[1]):
            labels.append(f"{method} · {p}")
            values.append(float(v))
            colors.append(f"C{k % 10}")
    fig = Figure(figsize=(7.5, 0.22 * len(labels) + 1.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(labels)), values, color=colors)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("parameter importance (Optuna; sums to 1 per method)")
    fig.tight_layout()
    return Plot(to_png(fig), "which hyperparameter mattered, per method (Optuna's importance evaluator)")


def tune_sections(
    studies: Sequence[Mapping[str, Any]], trials: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]]
) -> list[Section]:
    """The "Tuning" and "Tuned vs defaults" sections (none without studies)."""
    if not studies:
        return []
    st0 = studies[0]
    settings = st0.get("settings", {})
    budgets = {st["method"]: (st.get("settings") or {}).get("trials") for st in studies}
    common = max(set(budgets.values()), key=list(budgets.values()).count)
    odd = [f"{m}: {b}" for m, b in budgets.items() if b != common]
    budget = f"{common}" + (f" ({', '.join(odd)}; not the same budget)" if odd else " (the same for every method)")
    proxies = ", ".join(f"{f} seed {s}" for f, s in st0.get("proxies", []))
    intro = (
        f"Trial budget per method: {budget} (Optuna TPE with median pruning; trial 0 = the defaults) on "
        f"the proxy requests {proxies}, never the evaluated ones. Objective: mean |gap| to retrain over the "
        "leaderboard's accuracies, averaged over the proxies (lower is better); constraint: mean "
        f"time_ratio_vs_retrain <= {settings.get('max_time_ratio')}"
        + (f"; relearning gap weight {settings.get('relearn_weight')}" if settings.get("relearn_weight") else "")
        + ". The tuned values are in tuned.yaml."
    )
    headers = ["method", "trials (ok/pruned/failed)", "defaults", "tuned", "best trial", "time ratio", "tuned values",
               "most important"]  # fmt: skip
    rows = []
    for st in studies:
        mine = [t for t in trials if t["study"] == st["study"]]
        n = {s: sum(t["state"] == s for t in mine) for s in ("COMPLETE", "PRUNED", "FAIL")}
        best_t = next((t for t in mine if t["number"] == st.get("best_number")), None)
        ratio = _num((best_t or {}).get("info", {}).get("time_ratio"))
        imp = st.get("importance") or {}
        top = max(imp, key=imp.get) if imp else "n/c"
        feasible = "" if st.get("best_feasible", True) else " (over the time limit)"
        rows.append([st["method"], f"{n['COMPLETE']}/{n['PRUNED']}/{n['FAIL']}", _fmt(_num(st.get("default_value"))),
                     _fmt(_num(st.get("best_value"))), str(st.get("best_number", "n/c")), _fmt(ratio, 3) + feasible,
                     format_params(st.get("best_params") or {}) or "-",
                     f"{top} ({imp[top]:.2f})" if imp else top])  # fmt: skip
    md = (
        intro + "\n\n" + markdown_table(headers, rows) + "\n\nFigures (objective over trials, importance): report.html."
    )
    body = f"<p>{html.escape(intro)}</p>" + html_table(headers, rows)
    for plot in (_progress_plot(trials, studies), _importance_plot(studies)):
        if plot is not None:
            body += f'\n<figure><img src="{plot.data_uri}" alt="{html.escape(plot.caption)}">' \
                    f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>"  # fmt: skip
    out = [Section("Tuning (proxy requests)", md, body, data={"studies": list(studies)})]

    cmp_rows, data = [], []
    for st in studies:
        d = gap_by_kind(runs, st["method"], st.get("defaults") or {})
        t = gap_by_kind(runs, st["method"], st.get("tuned_params") or {})
        for kind in sorted(set(d) | set(t)):
            a, b = d.get(kind), t.get(kind)
            gain = None if a is None or b is None else a - b
            cmp_rows.append([st["method"], kind, _fmt(a), _fmt(b), "n/c" if gain is None else f"{gain:+.4f}"])
            data.append({"method": st["method"], "kind": kind, "defaults": a, "tuned": b, "improvement": gain})
    if cmp_rows:
        cmp_rows.sort(key=lambda r: (r[1], r[3]))
        h2 = ["method", "requests", "mean |gap| defaults", "mean |gap| tuned", "improvement"]
        note = ("On the evaluated requests (never tuned on): the leaderboard's mean |gap| to retrain at the defaults "
                "and at the tuned values; improvement > 0: tuning helped.")  # fmt: skip
        helped = sum(1 for x in data if x["improvement"] is not None and x["improvement"] >= 0.005)
        note += f" {helped} (method, request kind) pairs improve by >= 0.005."
        out.append(Section("Tuned vs defaults", note + "\n\n" + markdown_table(h2, cmp_rows),
                           f"<p>{html.escape(note)}</p>" + html_table(h2, cmp_rows), data=data))  # fmt: skip
    return out
