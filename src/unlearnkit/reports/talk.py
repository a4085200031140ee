"""Report section: class forgetting in the talk's layout, measured rows beside the talk's published figures.

The talk ("Learning, Unlearning and Relearning", AImageLab) shows setting-1 results as one table per
dataset: method | Acc_r | Acc_f | test | time. This section lays out the runs of setting-1 methods on
class requests the same way, one table per (dataset, model):

* **measured rows**: one per (method, hyperparameters), the mean over every class request and seed of
  the runs (Acc_r = ``acc_retain_test``, Acc_f = ``acc_forget_test``, test = ``acc_test``, time =
  ``time_s`` and ``time_ratio_vs_retrain``), shown in percent like the talk;
* **reference rows**: the talk's published figures, read from a copy of ``reference/talk_tables.json``
  shipped in ``reports/data/``, each labelled with the talk's dataset and model ("talk, MNIST/VGG16").
  They are never part of the measured statistics. When the talk has no figures for the measured dataset
  (digits, mnist1d, ...) the MNIST and CIFAR-10 figures are shown, labelled as such.

The talk's tables give Acc_r and Acc_f only (its test and time columns are empty here).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from unlearnkit.reports._aggregate import ORIGINAL, RETRAIN, as_number, canonical, format_params
from unlearnkit.reports._section import Section, by_dataset_model, ok_run_of_kind, register_section
from unlearnkit.reports.html import html_table
from unlearnkit.reports.tables import markdown_table

TITLE = "Talk layout: class forgetting (setting 1)"
HEADERS = ("source", "method", "Acc_r [%] ↑", "Acc_f [%] ↓", "test [%] ↑", "time [s]", "time / retrain")
#: measured column -> metric
COLUMNS = {"acc_r": "acc_retain_test", "acc_f": "acc_forget_test", "test": "acc_test",
           "time_s": "time_s", "time_ratio": "time_ratio_vs_retrain"}  # fmt: skip

#: the talk's datasets: registry name -> (key prefix in the WF-Net table, name shown)
TALK_DATASETS = {
    "mnist": ("mnist", "MNIST"), "cifar10": ("cifar10", "CIFAR-10"), "imagenet": ("imagenet", "ImageNet-1k"),
}  # fmt: skip
TALK_MODELS = {"vgg16": "VGG16", "resnet18": "ResNet-18", "vit_tiny": "ViT-T", "vit_small": "ViT-S"}
#: registry model name -> the talk's model name (reference rows are shown where dataset and model both match)
REGISTRY_TO_TALK_MODEL = {
    "vgg16": "VGG16", "vgg16_bn": "VGG16", "resnet18": "ResNet-18", "resnet18_tv": "ResNet-18",
    "vit_tiny": "ViT-T", "vit_tiny_patch16": "ViT-T", "vit_small": "ViT-S", "vit_small_patch16": "ViT-S",
    "allcnn": "All-CNN",
}  # fmt: skip
#: shown when asked for every reference (``all_references=True``) and the talk has no figures for the dataset
FALLBACK_DATASETS = ("mnist", "cifar10")


@cache
def talk_tables() -> dict[str, Any]:
    """The talk's tables (a verbatim copy of ``reference/talk_tables.json``), percent unless noted there."""
    text = resources.files("unlearnkit.reports").joinpath("data/talk_tables.json").read_text(encoding="utf-8")
    return json.loads(text)


def reference_rows(dataset: str) -> list[dict[str, Any]]:
    """The talk's class-forgetting figures for ``dataset`` (a registry name), as labelled rows in percent.

    Each row: ``{"source": "talk, MNIST/VGG16", "dataset": "MNIST", "model": "VGG16", "method": ...,
    "acc_r": 99.6, "acc_f": 99.6}`` (``None`` where the talk gives no figure). Empty for a dataset the
    talk does not cover.
    """
    tables = talk_tables()
    rows: list[dict[str, Any]] = []
    if dataset == "cifar10":  # Boundary Unlearning's table (Chen et al.; All-CNN, spec §5.3)
        for r in tables["boundary_unlearning_cifar10"]["rows"]:
            rows.append({"source": "talk, CIFAR-10/All-CNN", "dataset": "CIFAR-10", "model": "All-CNN",
                         "method": r["method"], "acc_r": r.get("acc_retain"),
                         "acc_f": r.get("acc_forget")})  # fmt: skip
    if dataset in TALK_DATASETS:  # WF-Net's table: per-class unlearning averaged over classes
        prefix, shown = TALK_DATASETS[dataset]
        for model, entries in tables["wfnet_class_unlearning"]["models"].items():
            name = TALK_MODELS.get(model, model)
            for r in entries:
                rows.append({"source": f"talk, {shown}/{name}", "dataset": shown, "model": name,
                             "method": r["method"], "acc_r": r.get(f"{prefix}_acc_r"),
                             "acc_f": r.get(f"{prefix}_acc_f")})  # fmt: skip
    return rows


def _setting(run: Mapping[str, Any]) -> int | None:
    """The setting the run's method had when it ran (recorded with the run; ``None`` for original/audit rows)."""
    s = run.get("setting")
    return int(s) if isinstance(s, int) else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _measured(runs: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, params): means over the runs (class requests × seeds)."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault((str(run["method"]), canonical(run.get("params") or {})), []).append(run)
    per_method: dict[str, int] = {}
    for method, _ in groups:
        per_method[method] = per_method.get(method, 0) + 1
    order = {RETRAIN: 0, ORIGINAL: 1}
    rows = []
    for (method, _), group in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 2), kv[0])):
        params = dict(group[0].get("params") or {})
        label = method if per_method[method] == 1 or not params else f"{method} ({format_params(params)})"
        row: dict[str, Any] = {"method": method, "label": label, "params": params, "n_runs": len(group)}
        row["requests"] = sorted({str(r["scenario"]["forget"]) for r in group})
        row["seeds"] = sorted({r.get("seed") for r in group}, key=str)
        for col, metric in COLUMNS.items():
            nums = [as_number((r.get("metrics") or {}).get(metric)) for r in group]
            row[col] = _mean([v for v in nums if v is not None])
        rows.append(row)
    return rows


def _pct(v: float | None) -> str | None:
    return None if v is None else f"{100 * v:.2f}"


def _ref_cell(v: Any) -> str | None:
    return None if v is None else f"{float(v):.2f}"


def _table(
    dataset: str, model: str, runs: list[Mapping[str, Any]], all_references: bool = False
) -> tuple[str, str, dict[str, Any]]:
    measured = _measured(runs)
    if all_references:
        shown_datasets = [dataset] if reference_rows(dataset) else list(FALLBACK_DATASETS)
        refs = [r for d in shown_datasets for r in reference_rows(d)]
    else:
        talk_model = REGISTRY_TO_TALK_MODEL.get(model)
        refs = [r for r in reference_rows(dataset) if talk_model is not None and r["model"] == talk_model]
    source = f"measured: {dataset}/{model}"
    grid: list[list[Any]] = [
        [source, r["label"], _pct(r["acc_r"]), _pct(r["acc_f"]), _pct(r["test"]),
         None if r["time_s"] is None else f"{r['time_s']:.2f}",
         None if r["time_ratio"] is None else f"{r['time_ratio']:.3f}"]
        for r in measured
    ]  # fmt: skip
    grid += [[f"{r['source']} (reference)", r["method"], _ref_cell(r["acc_r"]), _ref_cell(r["acc_f"]), None, None,
              None] for r in refs]  # fmt: skip
    requests = sorted({q for r in measured for q in r["requests"]})
    seeds = sorted({s for r in measured for s in r["seeds"]}, key=str)
    caption = (
        f"{dataset} · {model}: measured rows are means over {', '.join(requests)} × seeds "
        f"{', '.join(map(str, seeds))} (Acc_r = acc_retain_test, Acc_f = acc_forget_test, test = acc_test, "
        "time = time_s and its ratio to retrain's in the same run)."
    )
    if not refs:
        ref_note = (
            f"No reference rows: the talk publishes no figures for {dataset} with {model} (its figures are for "
            "MNIST, CIFAR-10 and ImageNet with its own models)."
        )
    elif {r["dataset"] for r in refs} == {refs[0]["dataset"]} and (not all_references or reference_rows(dataset)):
        models = ", ".join(sorted({r["model"] for r in refs}))
        ref_note = (
            f"Reference rows: the talk's published figures for {refs[0]['dataset']} ({models}), not measured here."
        )
    else:
        ref_note = (
            f"Reference rows: the talk has no figures for {dataset}; shown for comparison are its published "
            "MNIST and CIFAR-10 figures (other datasets and models), not measured here and not comparable "
            "number for number."
        )
    if any(r["model"] == "All-CNN" for r in refs):
        ref_note += (
            " The CIFAR-10/All-CNN rows (Boundary Unlearning's table) are accuracies on the training sets D_r and "
            "D_f, as the talk labels them."
        )
    md = f"### {dataset} · {model}\n\n_{caption}_\n\n{markdown_table(HEADERS, grid)}\n\n_{ref_note}_"
    page = (
        f"<h3>{html.escape(dataset)} · {html.escape(model)}</h3>\n"
        f'<p class="caption">{html.escape(caption)}</p>\n{html_table(HEADERS, grid)}\n'
        f'<p class="muted">{html.escape(ref_note)}</p>'
    )
    data = {"dataset": dataset, "model": model, "measured": measured, "reference": refs,
            "reference_note": ref_note, "units": {"measured": "fractions in [0, 1]; time in s",
                                                  "reference": "percent, as published in the talk"}}  # fmt: skip
    return md, page, data


@register_section("talk_layout")
def talk_layout(runs: list[Mapping[str, Any]], all_references: bool = False) -> Section | None:
    """The talk-layout table(s), or ``None`` when no setting-1 method ran on a class request.

    The talk's published rows are shown only where its dataset and model match the measured ones;
    ``all_references=True`` shows the talk's figures for the dataset (any model), or its MNIST and CIFAR-10
    figures when it has none for the dataset, labelled as not comparable.
    """
    class_runs = [r for r in runs if ok_run_of_kind(r, "class:") and _setting(r) in (1, None)]
    if not any(_setting(r) == 1 for r in class_runs):
        return None
    parts = [_table(d, m, group, all_references) for (d, m), group in by_dataset_model(class_runs)]
    intro = (
        "Setting-1 methods on class requests, in the talk's layout. Measured rows come from these runs; "
        "rows marked (reference) are the talk's published figures, never mixed into the measured means."
    )
    return Section(
        title=TITLE,
        markdown=intro + "\n\n" + "\n\n".join(md for md, _, _ in parts),
        html="<p>" + intro + "</p>\n" + "\n".join(page for _, page, _ in parts),
        data={"tables": [d for _, _, d in parts]},
    )
