"""Reports: report.json keeps every run and every "not computed" value; Markdown and HTML show retrain first,
the right mean ± std, gaps to retrain and failures; the HTML is one self-contained file."""

from __future__ import annotations

import json
import math
import re
import zlib

import numpy as np
import pytest

from unlearnkit.errors import UnlearnkitError
from unlearnkit.reports import (
    Section,
    aggregate,
    build_report_json,
    html_table,
    markdown_table,
    render_html,
    render_markdown,
    write_reports,
)

SCENARIOS = {
    "class": {"dataset": "digits", "forget": "class:3", "val_fraction": 0.1, "num_classes": 10},
    "random": {"dataset": "digits", "forget": "random:0.1", "val_fraction": 0.1, "num_classes": 10},
}
METHODS = ("retrain", "original", "neggrad", "finetune", "random_labels")
SEEDS = (0, 1, 2)
NC_ZRF = "not computed: no random model"


def _metrics(scenario: str, method: str, seed: int) -> dict:
    """Deterministic, method- and seed-dependent synthetic metrics."""
    rng = np.random.default_rng(zlib.crc32(f"{scenario}/{method}/{seed}".encode()))
    forget = {"retrain": 0.0, "original": 0.99, "neggrad": 0.05, "finetune": 0.4, "random_labels": 0.1}[method]
    if scenario == "random":
        forget = {"retrain": 0.9, "original": 1.0}.get(method, 0.93)
    m = {
        "acc_retain": 0.95 + 0.01 * seed + 0.001 * len(method),
        "acc_forget": forget + 0.01 * rng.random(),
        "acc_test": 0.9 + 0.005 * seed,
        "activation_distance": 0.1 * rng.random(),
        "js_divergence": 0.02 * rng.random(),
        "zrf": NC_ZRF,  # not computed in any seed
        "time_s": 0.5 + rng.random(),
        "time_ratio_vs_retrain": {"retrain": 1.0, "original": 0.001}.get(method, 0.05 + 0.01 * seed),
        "mia_loss_lr": 0.5 + 0.1 * rng.random(),
        "my_new_metric": 7.0 + seed,  # not registered
    }
    if scenario == "class":
        m["acc_forget_test"] = forget + 0.02 * rng.random()
        m["acc_retain_test"] = 0.9 + 0.003 * seed
    return m


def make_runs() -> list[dict]:
    """2 scenarios x (retrain, original, 3 methods) x 3 seeds; one failed run; one partial not-computed value."""
    runs = []
    for sname, scen in SCENARIOS.items():
        for method in METHODS:
            for seed in SEEDS:
                failed = sname == "class" and method == "neggrad" and seed == 2
                runs.append({
                    "key": f"{sname}-{method}-{seed}", "status": "failed" if failed else "ok",
                    "error": "loss became nan during neggrad" if failed else None,
                    "scenario": {**scen, "seed": seed}, "model": "small_cnn", "method": method,
                    "params": {} if method in ("retrain", "original") else {"lr": 1e-4, "epochs": 5}, "seed": seed,
                    "metrics": {} if failed else _metrics(sname, method, seed),
                    "created_at": "2026-11-29T04:10:00Z", "splits_hash": "ab12",
                })  # fmt: skip
    # js_divergence not computed in one seed only: the cell keeps the mean of the others plus a footnote
    runs[-1]["metrics"]["js_divergence"] = "not computed: the forget split is empty"
    return runs


def _all_metrics(md: str, section: int) -> str:
    """The ``section``-th scenario's full table (every metric) under "All metrics", before its CI/gap parts."""
    return md.split("\n## All metrics")[1].split("\n### ")[1 + section].split("\n#### ")[0]


def _row(md: str, label: str, section: int = 0) -> list[str]:
    """Cells of ``label``'s row in the ``section``-th scenario's full table (its split parts joined)."""
    out: list[str] = []
    for line in _all_metrics(md, section).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].strip("*") == label:
            out += cells if not out else cells[2:]
    if not out:
        raise AssertionError(f"no row {label!r}")
    return out


def _header(md: str, section: int = 0) -> list[str]:
    out: list[str] = []
    for line in _all_metrics(md, section).splitlines():
        if line.startswith("| method"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out += cells if not out else cells[2:]
    return out


@pytest.fixture(scope="module")
def runs() -> list[dict]:
    return make_runs()


@pytest.fixture(scope="module")
def md(runs) -> str:
    return render_markdown(runs)


def _talk_section() -> Section:
    return Section(
        "Talk layout",
        markdown_table(["method", "acc_r"], [["wfnet", 73.2], ["retrain", None]]),
        html_table(["method", "acc_r"], [["wfnet", 73.2]]),
        data={"rows": 2},
    )


@pytest.fixture(scope="module")
def written(runs, tmp_path_factory) -> dict:
    """write_reports once for the module (plots are the slow part)."""
    return write_reports(runs, tmp_path_factory.mktemp("out") / "nested" / "report", extra_sections=[_talk_section()])


@pytest.fixture(scope="module")
def page(written) -> str:
    return written["html"].read_text(encoding="utf-8")


def test_json_keeps_every_run_and_not_computed_strings(runs):
    rep = build_report_json(runs)
    json.dumps(rep, allow_nan=False)  # strict JSON
    assert len(rep["runs"]) == len(runs)
    assert [r["key"] for r in rep["runs"]] == [r["key"] for r in runs]
    for got, want in zip(rep["runs"], runs, strict=True):
        for k in ("scenario", "model", "method", "params", "seed", "status", "error", "metrics"):
            assert got[k] == want[k]
    assert all(r["metrics"]["zrf"] == NC_ZRF for r in rep["runs"] if r["status"] == "ok")
    # summary: one group per (scenario without seed, model, method, params); zrf stays a string there too
    assert len(rep["summary"]) == len(SCENARIOS) * len(METHODS)
    neggrad = next(s for s in rep["summary"] if s["method"] == "neggrad" and s["scenario"]["forget"] == "class:3")
    assert (neggrad["n_seeds"], neggrad["n_failed"], neggrad["seeds"]) == (2, 1, [0, 1])
    assert neggrad["metrics"]["zrf"] == NC_ZRF
    vals = [r["metrics"]["acc_retain"] for r in runs if r["key"] in ("class-neggrad-0", "class-neggrad-1")]
    assert neggrad["metrics"]["acc_retain"]["mean"] == pytest.approx(np.mean(vals))
    assert neggrad["metrics"]["acc_retain"]["std"] == pytest.approx(np.std(vals, ddof=1))
    retrain = next(s for s in rep["summary"] if s["method"] == "retrain" and s["scenario"]["forget"] == "class:3")
    gap = neggrad["metrics"]["acc_forget"]["mean"] - retrain["metrics"]["acc_forget"]["mean"]
    assert neggrad["gap_to_retrain"]["acc_forget"] == pytest.approx(gap)
    assert rep["metrics_info"]["my_new_metric"]["registered"] is False
    assert rep["metrics_info"]["acc_retain"]["higher_is_better"] is True


def test_json_is_strict_with_nan_and_numpy_values():
    run = {"method": "neggrad", "scenario": {"dataset": "d"}, "seed": np.int64(0),
           "metrics": {"acc_retain": float("nan"), "acc_test": np.float32(0.5)}}  # fmt: skip
    rep = build_report_json([run])
    text = json.dumps(rep, allow_nan=False)
    assert rep["runs"][0]["metrics"] == {"acc_retain": "nan", "acc_test": 0.5}
    assert rep["runs"][0]["status"] == "ok" and "nan" in text


def test_markdown_retrain_first_then_original_then_methods_sorted(md):
    for section in (0, 1):
        part = md.split("\n## Scenarios")[1].split("\n## ")[1 + section]
        table = part.split("\n\n")[2]  # title, caption, table
        labels = [ln.strip("|").split("|")[0].strip().strip("*") for ln in table.splitlines()[2:] if ln.startswith("|")]
        assert labels == ["retrain", "original", "finetune", "neggrad", "random_labels"]


def test_markdown_mean_std_cell_matches_numpy(runs, md):
    header = _header(md)
    col = header.index("acc_retain ↑")
    vals = [r["metrics"]["acc_retain"] for r in runs if r["key"].startswith("class-finetune-")]
    want = f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}"
    assert _row(md, "finetune")[col].strip("*") == want
    # seeds per row, failures counted
    assert _row(md, "finetune")[1] == "3"
    assert _row(md, "neggrad")[1] == "2 (+1 failed)"


def test_markdown_column_order_arrows_and_unknown_metric(md):
    header = _header(md)
    names = [h.split(" ")[0] for h in header[2:]]
    assert names[:5] == ["acc_retain", "acc_forget", "acc_test", "acc_forget_test", "acc_retain_test"]
    assert names.index("js_divergence") < names.index("mia_loss_lr") < names.index("time_s")
    assert names.index("time_ratio_vs_retrain") < names.index("my_new_metric")
    assert "acc_forget ≈" in header and "acc_forget_test ↓" in header and "time_s ↓" in header
    assert "my_new_metric" in header  # plain, no arrow


def test_markdown_not_computed_column_dropped_with_reason(md):
    assert "zrf" not in " ".join(_header(md))
    assert "- zrf — not computed: no random model" in md


def test_markdown_partial_not_computed_gets_footnote(runs, md):
    col = _header(md, 1).index("js_divergence ↓")
    cell = _row(md, "random_labels", section=1)[col].replace("**", "")
    vals = [r["metrics"]["js_divergence"] for r in runs[-3:-1]]
    assert cell.startswith(f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f} [")
    assert "js_divergence: computed in 2 of 3 seeds; not computed: the forget split is empty" in md


def test_markdown_gap_to_retrain_and_failure(runs, md):
    part = md.split("\n## All metrics")[1].split("\n### ")[1]
    gaps = part.split("#### Δ vs retrain")[1]
    assert "| retrain |" not in gaps
    f = [r["metrics"]["acc_forget_test"] for r in runs if r["key"].startswith("class-original-")]
    r = [r["metrics"]["acc_forget_test"] for r in runs if r["key"].startswith("class-retrain-")]
    line = next(ln for ln in gaps.splitlines() if ln.startswith("| original |"))
    assert f"{np.mean(f) - np.mean(r):+.3f}" in line
    assert "neggrad (lr" not in part  # one params set per method: plain labels
    assert "neggrad, seed 2 [failed]: loss became nan during neggrad" in md.split("\n## All metrics")[0]


def test_html_single_file_with_embedded_figures_and_no_urls(page):
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("data:image/png;base64,") == 4  # scatter + time bars per scenario
    no_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert "http" not in no_images and "<link" not in no_images and "<script" not in no_images
    assert "<style>" in page
    assert "loss became nan during neggrad" in page
    scenario = page[page.index('<section id="scenario-1">') :]
    assert scenario.index(">retrain<") < scenario.index(">original<") < scenario.index(">finetune<")


def test_html_escapes_text():
    run = {"method": "<script>x</script>", "scenario": {"dataset": "a&b"}, "status": "failed",
           "error": "bad <b>value</b> & \"quotes\""}  # fmt: skip
    page = render_html([run])
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "bad &lt;b&gt;value&lt;/b&gt; &amp; &quot;quotes&quot;" in page


def test_write_reports_creates_three_files(runs, written):
    assert set(written) == {"json", "md", "html"}
    out = written["json"].parent
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]  # no temp files left
    rep = json.loads(written["json"].read_text(encoding="utf-8"))
    assert len(rep["runs"]) == len(runs) and rep["sections"][0]["data"] == {"rows": 2}
    md = written["md"].read_text(encoding="utf-8")
    assert md == render_markdown(runs, extra_sections=[_talk_section()])
    assert "## Talk layout" in md and "| wfnet | 73.200 |" in md and "| retrain | — |" in md
    assert "<h2>Talk layout</h2>" in written["html"].read_text(encoding="utf-8")


def test_empty_run_list_says_no_runs(tmp_path):
    assert build_report_json([])["runs"] == []
    assert "No runs to report." in render_markdown([])
    assert "No runs to report." in render_html([])
    paths = write_reports([], tmp_path)
    assert "No runs to report." in paths["md"].read_text(encoding="utf-8")


def test_one_seed_shows_mean_only_and_missing_retrain_is_said():
    runs = [{"method": "neggrad", "scenario": {"dataset": "d", "forget": "class:1"}, "seed": 0,
             "metrics": {"acc_retain": 0.5, "acc_forget": "not computed: no forget split"}}]  # fmt: skip
    md = render_markdown(runs)
    assert "| neggrad | 1 | 0.500 |" in md
    assert "No successful retrain run" in md
    assert "- acc_forget — not computed: no forget split" in md


def test_param_variants_get_distinct_labels():
    runs = [{"method": "neggrad", "params": {"lr": lr, "epochs": 5}, "seed": 0, "metrics": {"acc_retain": lr}}
            for lr in (1e-3, 1e-4)]  # fmt: skip
    labels = [row.label for row in aggregate(runs)[0].rows]
    assert labels == ["neggrad (lr=0.0001)", "neggrad (lr=0.001)"]


def test_bad_input_raises_clear_errors():
    with pytest.raises(UnlearnkitError, match="no method"):
        render_markdown([{"metrics": {}}])
    with pytest.raises(UnlearnkitError, match="list of run records"):
        build_report_json({"method": "x"})  # type: ignore[arg-type]
    with pytest.raises(UnlearnkitError, match="Section"):
        render_markdown([], extra_sections=["not a section"])  # type: ignore[list-item]


def test_nan_metric_does_not_crash():
    runs = [{"method": m, "seed": s, "metrics": {"acc_retain": math.nan if m == "neggrad" else 0.9,
                                                  "time_ratio_vs_retrain": 0.0 if m == "neggrad" else 1.0}}
            for m in ("retrain", "neggrad") for s in (0, 1)]  # fmt: skip
    assert "| neggrad | 2 | nan ± nan |" in render_markdown(runs)
    assert "<html" in render_html(runs)


def test_cell_not_computed_in_every_seed_is_nc_with_footnote():
    runs = [{"method": m, "seed": s, "metrics": {"acc_retain": 0.9, "zrf": 0.5 if m == "retrain" else NC_ZRF}}
            for m in ("retrain", "neggrad") for s in (0, 1, 10)]  # fmt: skip
    md = render_markdown(runs)
    assert "| neggrad | 3 | 0.900 ± 0.000 | n/c [1] |" in md
    assert "[1] zrf: not computed: no random model" in md
    assert "seeds: 0, 1, 10" in md
