"""The run record: one typed row of ``results.db``, built in one place for every setting and executor.

A :class:`RunRecord` is what :func:`~unlearnkit.experiments.runner.run_cell` returns (in-process or from a
Ray worker) and what :class:`~unlearnkit.experiments.store.ResultsStore` writes and reads back. Metric
values are floats, JSON-able mappings (structured values such as WF-Net's curves) or
:class:`~unlearnkit.metrics.NotComputed`; they are stored as strict JSON, a not-computed value as
``{"not_computed": "<reason>"}``, and a non-finite float never reaches the file: it becomes
``NotComputed`` with the reason. Stores written before typed values (``"not computed: <reason>"`` strings)
read back as ``NotComputed`` too.

The record carries what reports need to know about its method (``setting``, ``needs``) so a report
rebuilt from an old ``results.db`` never consults what is installed now; ``flags`` are warnings shown
with the row (e.g. a collapsed model: scored, but near chance).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from unlearnkit.metrics import NotComputed

Status = Literal["ok", "failed"]

#: the stored form of a not-computed metric value
NOT_COMPUTED_KEY = "not_computed"
#: the pre-typed stored form (``"not computed: <reason>"``), still read
_LEGACY_PREFIX = "not computed"


@dataclass
class RunRecord:
    """One run = one stored row.

    Attributes:
        key: the hash of everything that determines the result (the store's primary key).
        scenario: the scenario's spec (``dataset``, ``forget``, ``seed``, sizes, ...).
        model: the architecture's name.
        method: a registered method name, ``"original"`` or ``"audit"``.
        seed: the run's seed.
        status: ``"ok"`` or ``"failed"``.
        error: why a failed run failed (one line).
        params: the method's hyperparameters as run.
        config: the resolved config of the run (its identity, plus what was measured about the environment,
            e.g. the thread count actually used).
        metrics: name -> float, JSON-able mapping, or :class:`NotComputed`.
        setting: the method's setting (1, 2 or 3) when the run was made; ``None`` for the original and audit rows.
        needs: the data the method needed (e.g. ``("forget", "retain")``) when the run was made.
        flags: warnings shown with the row in reports (e.g. ``"collapsed: ..."``).
        splits_hash: hash of the split indices (stored once per distinct split).
        splits: the split indices (written to the ``splits`` table, not into the row).
        versions: package versions that produced the run.
        created_at: ISO time the row was written (set by the store).
        trained_models: reference models this run trained (counted by the driver, not stored).
    """

    key: str
    scenario: dict[str, Any]
    model: str
    method: str
    seed: int
    status: Status = "ok"
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    setting: int | None = None
    needs: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    splits_hash: str | None = None
    splits: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    created_at: str | None = None
    trained_models: int = 0

    @property
    def ok(self) -> bool:
        """Whether the run succeeded."""
        return self.status == "ok"

    def failed(self, error: str) -> RunRecord:
        """This record as a failed run with ``error`` (its metrics dropped: no number from a failed run)."""
        return replace(self, status="failed", error=error, metrics={}, flags=())

    def label(self) -> str:
        """Short human-readable name for progress displays."""
        shots = self.params.get("shots")
        k = "" if shots is None else f" k={shots}"
        return f"{self.scenario.get('dataset', '?')} {self.scenario.get('forget', '?')} s{self.seed} {self.method}{k}"

    def as_dict(self) -> dict[str, Any]:
        """The record as the dict reports read: not-computed values as ``"not computed: <reason>"`` strings."""
        return {
            "key": self.key, "status": self.status, "error": self.error, "model": self.model, "method": self.method,
            "seed": self.seed, "scenario": dict(self.scenario), "params": dict(self.params),
            "config": dict(self.config), "metrics": {k: _report_value(v) for k, v in self.metrics.items()},
            "setting": self.setting, "needs": list(self.needs), "flags": list(self.flags),
            "splits_hash": self.splits_hash, "created_at": self.created_at, "versions": dict(self.versions),
        }  # fmt: skip


def _report_value(v: Any) -> Any:
    return str(v) if isinstance(v, NotComputed) else v


def _finite_structure(v: Any) -> bool:
    """Whether a structured (mapping/list) value holds only finite numbers."""
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, Mapping):
        return all(_finite_structure(x) for x in v.values())
    if isinstance(v, list | tuple):
        return all(_finite_structure(x) for x in v)
    return True


def clean_metric(name: str, v: Any) -> Any:
    """A metric value fit to store: a finite float, a finite JSON-able mapping, or :class:`NotComputed`.

    A non-finite number becomes ``NotComputed`` naming it; a legacy ``"not computed: <reason>"`` string
    becomes ``NotComputed(reason)``.
    """
    if isinstance(v, NotComputed):
        return v
    if isinstance(v, str) and v.startswith(_LEGACY_PREFIX):
        reason = v[len(_LEGACY_PREFIX) :].lstrip(":").strip()
        return NotComputed(reason or "no reason recorded")
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        f = float(v)
        if not math.isfinite(f):
            return NotComputed(f"{name} is {f} (a non-finite value is never stored)")
        return v
    if isinstance(v, Mapping | list | tuple) and not _finite_structure(v):
        return NotComputed(f"{name} holds a non-finite value (never stored)")
    return v


def encode_metrics(metrics: Mapping[str, Any]) -> str:
    """Strict JSON of ``metrics`` (no NaN/inf; :class:`NotComputed` as ``{"not_computed": reason}``)."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        v = clean_metric(k, v)
        out[k] = {NOT_COMPUTED_KEY: v.reason} if isinstance(v, NotComputed) else v
    return json.dumps(out, sort_keys=True, allow_nan=False)


def decode_metrics(text: str) -> dict[str, Any]:
    """The metrics stored by :func:`encode_metrics` (or by a store from before typed values)."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("metrics_json is not a JSON object")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, dict) and set(v) == {NOT_COMPUTED_KEY}:
            out[k] = NotComputed(str(v[NOT_COMPUTED_KEY]))
        else:
            out[k] = clean_metric(k, v)
    return out
