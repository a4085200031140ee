"""The report read at a glance (issue 18): the leaderboard first, compact per-scenario tables with a default
column set per request kind, every metric in a collapsed part, "best" by closeness to retrain, one number
format, and warnings a reader must see (a request that cannot separate methods, no-op methods, collapses)."""

from __future__ import annotations

import json
import re

import pytest

import unlearnkit.concept  # noqa: F401  (registers the setting-3 metrics and their directions)
from unlearnkit.reports import build_report_json, render_html, render_markdown
from unlearnkit.reports.tables import format_gap, format_mean_std, format_number

CLASS = {"dataset": "digits", "forget": "class:3", "num_classes": 10}
RANDOM = {"dataset": "digits", "forget": "random:0.1", "num_classes": 10}
CONCEPT = {"dataset": "visu_synth", "forget": "concept:unsafe"}
EXTRA = {f"extra_metric_{i:02d}": 0.1 * i for i in range(30)}  # a wide record: 30 more columns


def _run(scen: dict, method: str, seed: int, metrics: dict, **extra) -> dict:
    return {"scenario": {**scen, "seed": seed}, "model": "small_cnn", "method": method, "params": {}, "seed": seed,
            "status": "ok", "metrics": metrics, **extra}  # fmt: skip


def _class_metrics(forget: float, retain: float, test: float, **more) -> dict:
    return {"acc_forget_test": forget, "acc_retain_test": retain, "acc_test": test, "acc_forget": forget,
            "acc_retain": retain, "mia_efficacy": 0.5, "time_s": 1.0, "time_ratio_vs_retrain": 0.5, **EXTRA,
            **more}  # fmt: skip


def class_runs(seeds=(0, 1, 2)) -> list[dict]:
    """retrain forgets; 'ssd' keeps the original's high accuracies (raw max) without forgetting; 'good' is
    close to retrain."""
    runs = []
    for s in seeds:
        e = 0.001 * s
        runs += [
            _run(CLASS, "retrain", s, _class_metrics(0.0 + e, 0.90 + e, 0.81 + e, time_ratio_vs_retrain=1.0)),
            _run(CLASS, "original", s, _class_metrics(0.98 + e, 0.95 + e, 0.95 + e)),
            _run(CLASS, "good", s, _class_metrics(0.01 + e, 0.91 + e, 0.82 + e)),
            _run(CLASS, "ssd", s, _class_metrics(0.97 + e, 0.96 + e, 0.96 + e)),
        ]
    return runs


def _table_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("|")]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _scenario_part(md: str, title: str) -> str:
    return md.split("\n## Scenarios")[1].split(f"\n## {title}")[1].split("\n## ")[0]


# -- 1. layout ------------------------------------------------------------------------------------------
def test_leaderboard_opens_markdown_and_html():
    runs = class_runs()
    md = render_markdown(runs)
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    assert headings[0] == "Leaderboard"
    assert md.index("## Leaderboard") < md.index("## digits · forget class:3")
    page = render_html(runs)
    assert page.index("<h2>Leaderboard</h2>") < page.index('<section id="scenario-1">')
    assert page.index("<h2>Leaderboard</h2>") < page.index("<table")  # the first table on the page


def test_compact_class_table_has_the_default_columns_only():
    md = render_markdown(class_runs())
    part = _scenario_part(md, "digits · forget class:3 · small_cnn")
    header = _cells(_table_lines(part)[0])
    assert header == ["method", "seeds", "acc_forget_test ↓", "acc_retain_test ↑", "acc_test ↑", "\\|Δ\\| vs retrain ↓",
                      "mia_efficacy ≈", "time_ratio_vs_retrain ↓"]  # fmt: skip
    assert "extra_metric" not in part


def test_compact_sample_table_columns():
    runs = [_run(RANDOM, m, 0, {"acc_forget": f, "acc_retain": 0.9, "acc_test": 0.8, "ulira_auc": 0.6,
                                "mia_efficacy": 0.4, "time_ratio_vs_retrain": 0.3, **EXTRA})
            for m, f in (("retrain", 0.8), ("original", 1.0), ("a", 0.85))]  # fmt: skip
    md = render_markdown(runs)
    header = _cells(_table_lines(_scenario_part(md, "digits · forget random:0.1 · small_cnn"))[0])
    assert [h.split(" ")[0] for h in header] == ["method", "seeds", "acc_forget", "acc_retain", "acc_test",
                                                 "\\|Δ\\|", "ulira_auc", "time_ratio_vs_retrain"]  # fmt: skip


def test_every_markdown_table_fits_a_page_and_all_metrics_are_kept():
    runs = class_runs()
    md = render_markdown(runs)
    assert max(len(_cells(ln)) for ln in _table_lines(md)) <= 10
    all_part = md.split("\n## All metrics")[1]
    assert all(f"extra_metric_{i:02d}" in all_part for i in range(30))  # split over several tables, none lost
    rep = build_report_json(runs)
    good = next(s for s in rep["summary"] if s["method"] == "good")
    assert len(good["metrics"]) == 8 + 30  # report.json unchanged: every metric


def test_html_all_metrics_are_collapsed_under_details():
    page = render_html(class_runs())
    scenario = page[page.index('<section id="scenario-1">') :]
    compact, details = scenario.split('<details class="all">', 1)
    assert "extra_metric_00" not in compact and "extra_metric_29" in details
    assert "<summary>All metrics" in details
    first_table = compact[compact.index("<table") : compact.index("</table>")]
    assert len(re.findall(r"<th[ >]", first_table)) == 8


# -- 2. best, wording, numbers ----------------------------------------------------------------------------
def test_best_is_closest_to_retrain_not_the_raw_maximum():
    md = render_markdown(class_runs())
    lines = _table_lines(_scenario_part(md, "digits · forget class:3 · small_cnn"))
    header = _cells(lines[0])
    rows = {(c := _cells(ln))[0].strip("*"): c for ln in lines[2:]}
    for col in ("acc_test ↑", "acc_retain_test ↑", "\\|Δ\\| vs retrain ↓"):
        i = header.index(col)
        assert rows["good"][i].startswith("**"), col
        assert not rows["ssd"][i].startswith("**"), col  # ssd has the raw maximum but did not forget


def test_setting3_without_retrain_says_so_plainly_and_ranks_by_direction():
    runs = [_run(CONCEPT, m, 0, {"tstar_to_v_union_r10": r, "unsafe_rate_tstar": u, "t2v_r10": 0.5}, setting=3)
            for m, r, u in (("original", 0.1, 0.9), ("safe_clip", 0.6, 0.2), ("other", 0.3, 0.5))]  # fmt: skip
    md = render_markdown(runs)
    assert "No successful retrain run" not in md
    assert "No retrained model in setting 3, by design" in md
    lines = _table_lines(_scenario_part(md, "visu_synth · forget concept:unsafe · small_cnn"))
    header = _cells(lines[0])
    rows = {(c := _cells(ln))[0].strip("*"): c for ln in lines[2:]}
    assert rows["safe_clip"][header.index("unsafe_rate_tstar ↓")] == "**0.200**"
    assert rows["safe_clip"][header.index("tstar_to_v_union_r10 ↑")] == "**0.600**"


def test_numbers_use_one_fixed_format():
    assert format_number(9.2e-4) == "0.001" and format_number(-1e-5) == "0.000"
    assert format_gap(-9.2e-4) == "-0.001" and format_gap(-1e-6) == "+0.000" and format_gap(0.0) == "+0.000"
    assert format_mean_std(0.5, 1e-4) == "0.500 ± 0.000"
    runs = class_runs()
    for r in runs:
        if r["method"] == "good":
            r["metrics"]["acc_test"] = r["metrics"]["acc_test"] + 1e-5  # a tiny gap to retrain's value...
    md = render_markdown(runs)
    assert not re.search(r"\d\.\d+e[-+]\d", md)  # ... never printed as 9.20e-04 beside +0.000


# -- warnings ----------------------------------------------------------------------------------------------
def _warnings(runs: list[dict]) -> list[dict]:
    return build_report_json(runs)["warnings"]


def test_warns_when_original_is_within_the_stated_tolerance_of_retrain():
    runs = [_run(RANDOM, m, 0, {"acc_forget": f, "acc_retain": 0.9, "acc_test": 0.8})
            for m, f in (("retrain", 0.90), ("original", 0.91), ("a", 0.95))]  # fmt: skip
    (w,) = _warnings(runs)
    assert w["kind"] == "cannot_separate" and "acc_forget" in w["message"] and "0.010" in w["message"]
    assert "tolerance 0.02" in w["message"]
    assert "this request cannot separate methods" in render_markdown(runs).split("## Scenarios")[0]
    assert "this request cannot separate methods" in render_html(runs)
    runs[1]["metrics"]["acc_forget"] = 0.97  # 0.07 apart: separable
    assert _warnings(runs) == []


def test_cannot_separate_uses_the_spread_over_seeds():
    runs = []
    for s, (r, o) in enumerate(((0.80, 0.95), (0.95, 0.80), (0.85, 0.90))):
        runs += [_run(RANDOM, "retrain", s, {"acc_forget": r}), _run(RANDOM, "original", s, {"acc_forget": o})]
    (w,) = _warnings(runs)  # |Δ mean| = 0.017, std ≈ 0.076: noise
    assert "spread over seeds" in w["message"]
    assert _warnings(class_runs()) == []  # 0.98 vs 0.00 with std 0.001: clearly separable


def test_no_op_method_is_warned_and_a_changed_one_is_not():
    runs = class_runs()
    for r in [r for r in runs if r["method"] == "original"]:
        runs.append({**r, "method": "noop", "metrics": dict(r["metrics"])})
    ws = _warnings(runs)
    assert [(w["kind"], w["method"]) for w in ws] == [("no_op", "noop")]
    assert "all 3 seed(s)" in ws[0]["message"]
    runs[-1] = {**runs[-1], "metrics": {**runs[-1]["metrics"], "acc_test": 0.5}}  # one seed differs
    assert _warnings(runs) == []


def test_collapsed_flags_are_listed_as_warnings():
    runs = class_runs()
    runs[2] = {**runs[2], "flags": ["collapsed: acc_test 0.100 within 0.05 of chance 0.100"]}
    (w,) = _warnings(runs)
    assert w["kind"] == "collapsed" and w["method"] == "good" and "seed 0" in w["message"]
    md = render_markdown(runs)
    assert md.index("## Warnings") < md.index("## Scenarios")
    json.dumps(build_report_json(runs), allow_nan=False)


@pytest.mark.parametrize("render", [render_markdown, render_html])
def test_no_warnings_block_when_nothing_to_warn(render):
    assert "Warnings" not in render(class_runs())


# -- leaderboard: CI over seeds and ties -----------------------------------------------------------------
def _lb_runs(scores: dict[str, tuple[float, ...]]) -> list[dict]:
    """Class runs whose per-seed acc_forget_test gaps to retrain (0.0) are ``scores`` (the others match)."""
    runs = []
    for s in range(len(next(iter(scores.values())))):
        runs.append(_run(CLASS, "retrain", s, {"acc_forget_test": 0.0, "acc_retain_test": 0.9, "acc_test": 0.8}))
        for m, vals in scores.items():
            runs.append(_run(CLASS, m, s, {"acc_forget_test": vals[s], "acc_retain_test": 0.9, "acc_test": 0.8}))
    return runs


def _board_rows(runs: list[dict]) -> dict[str, dict]:
    from unlearnkit.reports.leaderboard import build_boards

    (b,) = build_boards(runs)
    return {r["method"]: r for r in b.data["rows"]}, b


def test_leaderboard_shows_ci_over_seeds_and_marks_ties():
    # a: 0.03 ± wide, b: 0.06 ± wide -> tied; c: far behind -> its own rank
    rows, b = _board_rows(_lb_runs({"a": (0.0, 0.09, 0.0), "b": (0.09, 0.0, 0.09), "c": (0.9, 0.9, 0.9)}))
    assert (rows["a"]["rank"], rows["a"]["tied"]) == (1, True)
    assert (rows["b"]["rank"], rows["b"]["tied"]) == (1, True)
    assert (rows["c"]["rank"], rows["c"]["tied"]) == (3, False)
    assert rows["a"]["ci95"] == pytest.approx(4.303 * (0.09 / 3**0.5) / 3**0.5 / 3, rel=1e-3)  # t_{.975,2}·std/√n
    cells = {r[1]: r for r in b.rows}
    assert cells["a"][0] == "1=" and cells["b"][0] == "1=" and cells["c"][0] == "3"
    assert re.fullmatch(r"0\.010 ± 0\.\d{3}", cells["a"][2])
    assert "n=: tied" in render_markdown(_lb_runs({"a": (0.0, 0.09, 0.0), "b": (0.09, 0.0, 0.09)}))


def test_leaderboard_separated_scores_are_not_tied():
    rows, _ = _board_rows(_lb_runs({"a": (0.01, 0.011, 0.012), "b": (0.3, 0.31, 0.32)}))
    assert (rows["a"]["rank"], rows["a"]["tied"], rows["b"]["rank"], rows["b"]["tied"]) == (1, False, 2, False)


# -- 3. scatter plot ----------------------------------------------------------------------------------------
def _scatter_table(n_methods: int = 14):
    from unlearnkit.reports import aggregate

    runs = [_run(CLASS, "retrain", 0, {"acc_forget_test": 0.0, "acc_retain_test": 0.9})]
    runs.append(_run(CLASS, "original", 0, {"acc_forget_test": 0.98, "acc_retain_test": 0.95}))
    for i in range(n_methods):  # all on the retrain star but one far away with a huge std
        runs += [_run(CLASS, f"m{i:02d}", s, {"acc_forget_test": 0.0 + 0.001 * i + 0.9 * s * (i == 0),
                                               "acc_retain_test": 0.9}) for s in (0, 1)]  # fmt: skip
    (table,) = aggregate(runs)
    return table


def test_scatter_styles_are_distinct_per_method():
    from unlearnkit.reports.plots import row_styles

    table = _scatter_table()
    styles = [st for st, row in zip(row_styles(table), table.rows, strict=True) if row.kind == "method"]
    assert len(set(styles)) == len(styles) == 14
    assert len({c for c, _ in styles}) == 13 and len({m for _, m in styles}) > 1  # colours and markers both vary


def test_scatter_axes_are_fixed_labels_stack_and_legend_is_outside():
    from unlearnkit.reports.plots import label_offsets, scatter_figure

    fig, _, _, _ = scatter_figure(_scatter_table())
    ax = fig.axes[0]
    assert ax.get_xlim() == (0.0, 1.0) and ax.get_ylim() == (0.0, 1.0)  # a wide std does not stretch the axes
    legend = ax.get_legend()
    fig.canvas.draw()
    box = legend.get_window_extent().transformed(ax.transAxes.inverted())
    assert box.x0 >= 1.0  # entirely right of the axes: it covers no point
    texts = [t.get_text() for t in ax.texts]
    assert "m03" in texts and "retrain" in texts  # points are labelled
    offs = label_offsets([(0.9, 0.0), (0.905, 0.001), (0.9, 0.02), (0.2, 0.5)])
    assert len(set(offs[:3])) == 3  # overlapping points: one label slot each
    assert offs[0][0] < 0 < offs[3][0]  # near the right edge the label goes left, inside the axes


def test_html_tables_have_at_most_ten_columns_even_under_all_metrics():
    page = render_html(class_runs())
    tables = re.findall(r"<table.*?</table>", page, flags=re.S)
    assert max(len(re.findall(r"<th[ >]", t.split("</tr>")[0])) for t in tables) <= 10
    assert all(f"extra_metric_{i:02d}" in page for i in range(30))


# -- 4. published talk rows only where dataset and model match ------------------------------------------------
def _talk_runs(dataset: str, model: str) -> list[dict]:
    return [{**_run({**CLASS, "dataset": dataset}, m, 0, {"acc_forget_test": 0.0, "acc_retain_test": 0.9,
                                                          "acc_test": 0.8}), "model": model, "setting": 1}
            for m in ("retrain", "original", "finetune")]  # fmt: skip


def test_talk_reference_rows_only_for_the_talks_dataset_and_model():
    from unlearnkit.reports.talk import talk_layout

    own = talk_layout(_talk_runs("digits", "small_cnn"))
    assert own.data["tables"][0]["reference"] == [] and "talk, " not in own.markdown
    assert "No reference rows" in own.markdown
    mnist = talk_layout(_talk_runs("mnist", "vgg16_bn")).data["tables"][0]["reference"]
    assert mnist and {(r["dataset"], r["model"]) for r in mnist} == {("MNIST", "VGG16")}
    assert talk_layout(_talk_runs("mnist", "small_cnn")).data["tables"][0]["reference"] == []
    asked = talk_layout(_talk_runs("digits", "small_cnn"), all_references=True).data["tables"][0]["reference"]
    assert {r["dataset"] for r in asked} == {"MNIST", "CIFAR-10"}
