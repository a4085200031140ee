"""Warnings a reader must see before trusting a ranking: shown at the top of every report and stored in
report.json (``"warnings"``) for the console to print.

* **cannot separate methods** — the original (no unlearning) is within noise of the retrained model on the
  forget metric, so every method looks "close to retrain" whether or not it forgot anything. Noise is the
  larger spread (sample std) of the two rows over seeds when both have several, else :data:`TOLERANCE`.
* **no-op** — a method whose accuracies equal the original's (within :data:`NOOP_ATOL`) on every seed:
  its output is the original model.
* **collapsed** — runs whose record carries a ``"collapsed: ..."`` flag (set when the model was scored).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from unlearnkit.reports._aggregate import FORGET_METRIC, ORIGINAL, ScenarioTable, canonical

#: the stated tolerance when a row has a single seed (accuracy points, absolute)
TOLERANCE = 0.02
#: a method's accuracies within this of the original's on every seed are a no-op
NOOP_ATOL = 1e-9


@dataclass(frozen=True)
class ReportWarning:
    """One warning: its kind (``"cannot_separate"``, ``"no_op"``, ``"collapsed"``), the scenario table's
    title, the row label (empty for a whole request) and a one-line message."""

    kind: str
    scenario: str
    method: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """The warning as a JSON-able dict."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.scenario}: {self.message}"


def _row(table: ScenarioTable, method: str):
    return next((r for r in table.rows if r.method == method and r.runs), None)


def cannot_separate(table: ScenarioTable) -> ReportWarning | None:
    """The warning for a request whose original is within noise of retrain on the forget metric."""
    metric = FORGET_METRIC.get(table.kind)
    ref, orig = table.retrain, _row(table, ORIGINAL)
    if metric is None or ref is None or orig is None:
        return None
    a, b = ref.stats.get(metric), orig.stats.get(metric)
    if a is None or b is None or a.mean is None or b.mean is None or not math.isfinite(a.mean - b.mean):
        return None
    diff = abs(b.mean - a.mean)
    if a.std is not None and b.std is not None:
        noise, why = max(a.std, b.std), f"the spread over seeds (std {max(a.std, b.std):.3f})"
    else:
        noise, why = TOLERANCE, f"the tolerance {TOLERANCE:.2f} (one seed: no spread to measure)"
    if diff > noise:
        return None
    msg = (
        f"this request cannot separate methods: the original (no unlearning) is within noise of retrain on "
        f"{metric} (|original − retrain| = {diff:.3f} ≤ {why}); rankings here mostly reflect noise"
    )
    return ReportWarning("cannot_separate", table.title, "", msg)


def no_ops(table: ScenarioTable) -> list[ReportWarning]:
    """Methods whose every accuracy equals the original's on every seed they share with it."""
    orig = _row(table, ORIGINAL)
    if orig is None:
        return []
    by_seed = {canonical(r.seed): r.metrics for r in orig.runs}
    out = []
    for row in table.rows:
        if row.kind != "method" or not row.runs:
            continue
        same, checked = True, 0
        for run in row.runs:
            base = by_seed.get(canonical(run.seed))
            if base is None:
                same = False
                break
            accs = [k for k in run.metrics if k.startswith("acc_") and k in base]
            pairs = [(run.metrics[k], base[k]) for k in accs]
            if not pairs or not all(isinstance(x, int | float) and isinstance(y, int | float) for x, y in pairs):
                same = False
                break
            if any(not math.isfinite(x - y) or abs(x - y) > NOOP_ATOL for x, y in pairs):
                same = False
                break
            checked += 1
        if same and checked:
            msg = (
                f"{row.label} left the model unchanged: every accuracy equals the original's on all {checked} "
                f"seed(s) (no-op; check its hyperparameters)"
            )
            out.append(ReportWarning("no_op", table.title, row.label, msg))
    return out


def collapsed(table: ScenarioTable) -> list[ReportWarning]:
    """One warning per run flagged ``collapsed: ...`` by the runner."""
    out = []
    for label, run in table.flagged:
        for flag in run.record.get("flags") or ():
            if str(flag).startswith("collapsed"):
                out.append(ReportWarning("collapsed", table.title, label, f"{label}, seed {run.seed}: {flag}"))
    return out


def report_warnings(tables: list[ScenarioTable]) -> list[ReportWarning]:
    """Every warning for ``tables``, in table order: cannot-separate first, then no-ops, then collapses."""
    out: list[ReportWarning] = []
    for t in tables:
        w = cannot_separate(t)
        out += [w] if w is not None else []
        out += no_ops(t) + collapsed(t)
    return out
