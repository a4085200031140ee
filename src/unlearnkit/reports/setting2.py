"""Report section: class unlearning without retain data (setting 2) in the talk's layout.

The talk's "Experimental results on CIFAR-10 and CIFAR-20" table lists, per architecture, each method's
Acc_r and Acc_f with a column saying whether it used the retain set D_r. This section lays out the runs
the same way, one table per (dataset, model), with one row per (method, hyperparameters, k):

* **no-retain rows** (setting-2 methods; their runs carry ``shots`` = k, the number of forget images):
  D_r ✗, one row per k;
* **contrast rows**: the original model, retrain and every method that ran on the same class requests with
  the full data (finetune, neggrad_plus, ...), marked D_r ✓ when the method reads the retain set;
* **reference rows**: the talk's published setting-2 figures (``lora_no_retain_class_unlearning`` in a copy of
  ``reference/talk_tables.json`` shipped in ``reports/data/``) for the measured dataset and architecture
  (CIFAR-10/CIFAR-20 × ViT-T/ViT-S/Swin-S), labelled "(reference)" and never mixed into measured means.
  Other datasets get a note instead; a missing file is said, not hidden.

Measured values are means ± std over every class request and seed, in percent like the talk
(Acc_r = ``acc_retain_test``, Acc_f = ``acc_forget_test``); ``trainable`` is the share of parameters the
method trained (``trainable_fraction``), ``time`` its ``time_s``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from importlib import resources
from typing import Any

from unlearnkit.reports._aggregate import ORIGINAL, RETRAIN, as_number, canonical, format_params
from unlearnkit.reports._section import Section, by_dataset_model, ok_run_of_kind, register_section
from unlearnkit.reports.html import html_table
from unlearnkit.reports.tables import markdown_table

TITLE = "Talk layout: class unlearning without retain data (setting 2)"
HEADERS = ("source", "method", "D_r", "k", "Acc_r [%] ↑", "Acc_f [%] ↓", "trainable [%]", "time [s]")
TABLE_KEY = "lora_no_retain_class_unlearning"
#: registry dataset -> key in the talk's setting-2 table
TALK_DATASETS = {"cifar10": "cifar10", "cifar20": "cifar20"}
#: registry model -> (key prefix in the talk's table, name shown)
TALK_MODELS = {
    "vit_tiny_patch16": ("vit_tiny", "ViT-T"), "vit_small_patch16": ("vit_small", "ViT-S"),
    "swin_small": ("swin_small", "Swin-S"),
}  # fmt: skip


def load_reference() -> tuple[dict[str, Any] | None, str | None]:
    """The talk's setting-2 table from ``reports/data/talk_tables.json``, or ``(None, why not)``."""
    try:
        text = resources.files("unlearnkit.reports").joinpath("data/talk_tables.json").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return None, "reference rows skipped: unlearnkit/reports/data/talk_tables.json is not installed"
    try:
        table = json.loads(text).get(TABLE_KEY)
    except (json.JSONDecodeError, AttributeError):
        return None, "reference rows skipped: unlearnkit/reports/data/talk_tables.json is not valid JSON"
    if not isinstance(table, Mapping):
        return None, f"reference rows skipped: talk_tables.json has no {TABLE_KEY!r} table"
    return dict(table), None


def reference_rows(dataset: str, model: str, table: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The talk's rows for ``dataset``/``model`` (registry names), in percent; empty when not covered."""
    if dataset not in TALK_DATASETS or model not in TALK_MODELS or TALK_DATASETS[dataset] not in table:
        return []
    prefix, shown = TALK_MODELS[model]
    rows = []
    for r in table[TALK_DATASETS[dataset]]:
        uses = r.get("uses_retain")
        rows.append({
            "source": f"talk, {dataset.upper().replace('CIFAR', 'CIFAR-')}/{shown} (reference)", "method": r["method"],
            "uses_retain": uses, "acc_r": r.get(f"{prefix}_acc_r"), "acc_f": r.get(f"{prefix}_acc_f"),
        })  # fmt: skip
    return rows


def _uses_retain(method: str, params: Mapping[str, Any], needs: Any = None) -> bool | None:
    """Whether a run's method read D_r: no for setting-2 runs, the method's ``needs`` otherwise."""
    if "shots" in params:
        return False
    if method == ORIGINAL:
        return None
    if method == RETRAIN:
        return True
    return "retain" in needs if needs else None  # the needs recorded with the run (none in old stores)


def _stat(runs: list[Mapping[str, Any]], metric: str, scale: float = 100.0) -> dict[str, Any]:
    vals = [as_number((r.get("metrics") or {}).get(metric)) for r in runs]
    nums = [v * scale for v in vals if v is not None and math.isfinite(v)]
    if not nums:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(nums) / len(nums)
    std = math.sqrt(sum((v - mean) ** 2 for v in nums) / (len(nums) - 1)) if len(nums) > 1 else None
    return {"mean": mean, "std": std, "n": len(nums)}


def _cell(stat: Mapping[str, Any]) -> str | None:
    if stat["mean"] is None:
        return None
    return f"{stat['mean']:.2f}" if stat["std"] is None else f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def _rows(runs: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Measured rows: one per (method, params without k, k), ordered original, retrain, D_r ✓, then D_r ✗ by k."""
    groups: dict[tuple[str, str, Any], list[Mapping[str, Any]]] = {}
    variants: dict[str, set[str]] = {}
    for r in runs:
        params = dict(r.get("params") or {})
        k = params.pop("shots", None)
        key = (str(r["method"]), canonical(params), k)
        groups.setdefault(key, []).append(r)
        variants.setdefault(key[0], set()).add(key[1])
    out = []
    for (method, _, k), group in groups.items():
        params = {n: v for n, v in (group[0].get("params") or {}).items() if n != "shots"}
        uses = _uses_retain(method, group[0].get("params") or {}, group[0].get("needs"))
        label = method if len(variants[method]) == 1 or not params else f"{method} ({format_params(params)})"
        out.append({
            "method": method, "label": label, "params": params, "k": k, "uses_retain": uses, "n_runs": len(group),
            "acc_r": _stat(group, "acc_retain_test"), "acc_f": _stat(group, "acc_forget_test"),
            "trainable": _stat(group, "trainable_fraction"), "time_s": _stat(group, "time_s", 1.0),
        })  # fmt: skip
    rank = {ORIGINAL: 0, RETRAIN: 1}
    out.sort(key=lambda r: (rank.get(r["method"], 2 if r["k"] is None else 3), r["label"], r["k"] or 0))
    return out


def _flag(uses: bool | None) -> str:
    return "-" if uses is None else ("✓" if uses else "✗")


def _table(dataset: str, model: str, runs: list[Mapping[str, Any]], ref: Mapping[str, Any] | None,
           ref_missing: str | None) -> tuple[str, str, dict[str, Any]]:  # fmt: skip
    rows = _rows(runs)
    source = f"measured: {dataset}/{model}"
    grid: list[list[Any]] = [
        [source, r["label"], _flag(r["uses_retain"]), "-" if r["k"] is None else r["k"], _cell(r["acc_r"]),
         _cell(r["acc_f"]), _cell(r["trainable"]),
         None if r["time_s"]["mean"] is None else f"{r['time_s']['mean']:.2f}"]
        for r in rows
    ]  # fmt: skip
    refs = reference_rows(dataset, model, ref) if ref is not None else []
    grid += [[r["source"], r["method"], _flag(r["uses_retain"]), "-",
              None if r["acc_r"] is None else f"{float(r['acc_r']):.2f}",
              None if r["acc_f"] is None else f"{float(r['acc_f']):.2f}", None, None] for r in refs]  # fmt: skip
    requests = sorted({str((r.get("scenario") or {}).get("forget")) for r in runs})
    seeds = sorted({str(r.get("seed")) for r in runs})
    caption = (
        f"{dataset} · {model}: means ± std over {', '.join(requests)} × seeds {', '.join(seeds)}; "
        "k = forget images given to the no-retain (D_r ✗) methods; Acc_r = acc_retain_test, "
        "Acc_f = acc_forget_test, trainable = trainable_fraction."
    )
    if ref_missing is not None:
        note = ref_missing
    elif refs:
        note = "Reference rows: the talk's published figures (k not stated in the talk), not measured here."
    else:
        note = (
            f"No reference rows: the talk publishes setting-2 figures for CIFAR-10/CIFAR-20 with ViT-T/ViT-S/Swin-S "
            f"(vit_tiny_patch16, vit_small_patch16, swin_small), not for {dataset}/{model}."
        )
    md = f"### {dataset} · {model}\n\n_{caption}_\n\n{markdown_table(HEADERS, grid)}\n\n_{note}_"
    page = (
        f"<h3>{html.escape(dataset)} · {html.escape(model)}</h3>\n"
        f'<p class="caption">{html.escape(caption)}</p>\n{html_table(HEADERS, grid)}\n'
        f'<p class="muted">{html.escape(note)}</p>'
    )
    data = {"dataset": dataset, "model": model, "measured": rows, "reference": refs, "note": note,
            "units": "percent (measured and reference); time in s"}  # fmt: skip
    return md, page, data


@register_section("setting2_talk_layout")
def setting2_talk_layout(runs: list[Mapping[str, Any]]) -> Section | None:
    """The setting-2 table(s), or ``None`` when no no-retain method ran (no run has ``shots``)."""
    class_runs = [r for r in runs if ok_run_of_kind(r, "class:") and isinstance(r.get("method"), str)]
    no_retain = [r for r in class_runs if isinstance(r.get("params"), Mapping) and "shots" in r["params"]]
    if not no_retain:
        return None
    with_no_retain = {key for key, _ in by_dataset_model(no_retain)}  # a table where a D_r ✗ method ran
    ref, missing = load_reference()
    parts = [
        _table(dataset, model, group, ref, missing)
        for (dataset, model), group in by_dataset_model(class_runs)
        if (dataset, model) in with_no_retain
    ]
    intro = (
        "Class unlearning without retain data, in the talk's layout: D_r ✗ methods saw only k images of the "
        "class to forget; D_r ✓ rows used the retain set and are shown for contrast; rows marked (reference) are "
        "the talk's published figures, never mixed into the measured means."
    )
    return Section(
        title=TITLE,
        markdown=intro + "\n\n" + "\n\n".join(md for md, _, _ in parts),
        html="<p>" + html.escape(intro) + "</p>\n" + "\n".join(page for _, page, _ in parts),
        data={"tables": [d for _, _, d in parts]},
    )
