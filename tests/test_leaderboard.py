"""The leaderboard section, on synthetic runs whose gaps and scores are known by hand."""

from __future__ import annotations

import json

import pytest

from unlearnkit.reports import leaderboard as lb
from unlearnkit.reports import write_reports

BASE = {"dataset": "digits", "val_fraction": 0.1, "num_classes": 10}

#: per method: (acc_forget_test, acc_retain_test, acc_test) on class requests
CLASS_ACC = {
    "retrain": (0.0, 0.99, 0.90),
    "original": (1.0, 0.99, 0.99),
    "good": (0.02, 0.98, 0.89),  # |Δ| = 0.02, 0.01, 0.01 -> 0.01333
    "bad": (0.30, 0.95, 0.85),  # |Δ| = 0.30, 0.04, 0.05 -> 0.13
}
#: per method: (acc_forget, acc_retain, acc_test) on random requests
RANDOM_ACC = {
    "retrain": (0.90, 1.0, 0.95),
    "original": (1.0, 1.0, 0.96),
    "good": (0.95, 1.0, 0.95),  # mean |Δ| = 0.05/3
    "bad": (0.70, 0.9, 0.85),  # mean |Δ| = 0.4/3
}
TIME = {"retrain": 1.0, "original": 1.1, "good": 0.2, "bad": 0.05, "nodata": 0.1}


def _run(forget: str, method: str, seed: int, metrics: dict, **extra) -> dict:
    return {
        "scenario": {**BASE, "forget": forget, "seed": seed}, "model": "small_cnn", "method": method,
        "params": {}, "seed": seed, "status": "ok", "error": None,
        "metrics": {**metrics, "time_ratio_vs_retrain": TIME[method] + 0.01 * seed}, **extra,
    }  # fmt: skip


def _class_runs() -> list[dict]:
    out = []
    for forget in ("class:1", "class:3"):
        for seed in (0, 1, 2):
            for m, (f, r, t) in CLASS_ACC.items():
                out.append(_run(forget, m, seed, {"acc_forget_test": f, "acc_retain_test": r, "acc_test": t}))
    return out


def _random_runs(final: dict[str, float] | None = None) -> list[dict]:
    out = []
    for seed in (0, 1):
        for m, (f, r, t) in RANDOM_ACC.items():
            metrics = {"acc_forget": f, "acc_retain": r, "acc_test": t}
            if final is not None:
                metrics["final_score"] = final[m]
            out.append(_run("random:0.1", m, seed, metrics))
    return out


def _board(boards: list[lb.Board], kind: str) -> lb.Board:
    (b,) = [b for b in boards if b.data["kind"] == kind]
    return b


def test_class_requests_are_ranked_by_the_mean_gap_to_retrain():
    b = _board(lb.build_boards(_class_runs()), "class")
    rows = {r["method"]: r for r in b.data["rows"]}
    assert rows["good"]["mean_abs_gap"] == pytest.approx(0.04 / 3)
    assert rows["bad"]["mean_abs_gap"] == pytest.approx(0.39 / 3)
    assert rows["original"]["mean_abs_gap"] == pytest.approx((1.0 + 0.0 + 0.09) / 3)
    assert rows["good"]["gaps"]["acc_forget_test"] == pytest.approx(0.02)
    assert rows["bad"]["gaps"]["acc_test"] == pytest.approx(-0.05)
    assert [r["method"] for r in b.data["rows"]] == ["retrain", "good", "bad", "original"]
    assert [r["rank"] for r in b.data["rows"]] == [None, 1, 2, 3]
    assert rows["good"]["time_ratio_vs_retrain"] == pytest.approx(0.21)  # mean over seeds 0, 1, 2
    assert rows["good"]["runs"] == 6
    assert "class:1, class:3" in b.title and "acc_forget_test" in b.ranking


def test_random_requests_without_final_score_say_so_and_fall_back():
    b = _board(lb.build_boards(_random_runs()), "random")
    assert b.data["final_score"] == lb.NO_FINAL_SCORE == "not computed: no final_score in these runs"
    assert b.ranking.startswith("fallback") and "acc_forget" in b.ranking
    assert [r["method"] for r in b.data["rows"]] == ["retrain", "good", "original", "bad"]
    assert {r["method"]: r for r in b.data["rows"]}["good"]["mean_abs_gap"] == pytest.approx(0.05 / 3)
    sec = lb.leaderboard_section(_random_runs())
    assert sec is not None and "not computed: no final_score in these runs" in sec.markdown


def test_random_requests_rank_by_final_score_when_present():
    final = {"retrain": 0.6, "original": 0.01, "good": 0.2, "bad": 0.4}  # "bad" wins on the score
    b = _board(lb.build_boards(_random_runs(final)), "random")
    assert b.headers[2] == "final_score ± CI" and b.data["final_score"] is None
    assert [r["method"] for r in b.data["rows"]] == ["retrain", "bad", "good", "original"]
    assert b.rows[0][2] == "0.600 ± 0.000"  # the same on both seeds; retrain's score: the ceiling, shown, not ranked


def test_failures_are_counted_and_missing_values_sink():
    runs = _class_runs()
    runs.append({**_run("class:1", "good", 3, {}), "status": "failed", "error": "NaN loss"})
    runs.append(_run("class:1", "nodata", 0, {"acc_test": 0.5}) | {"metrics": {"time_ratio_vs_retrain": 0.1}})
    b = _board(lb.build_boards(runs), "class")
    rows = {r["method"]: r for r in b.data["rows"]}
    assert rows["good"]["failed"] == 1 and rows["good"]["runs"] == 6
    assert b.data["rows"][-1]["method"] == "nodata" and rows["nodata"]["rank"] is None
    line = next(r for r in b.rows if r[1] == "good")
    assert line[-1] == "6 (+1 failed)"


def test_no_retrain_no_leaderboard_and_every_format_has_it(tmp_path):
    no_ref = [r for r in _class_runs() if r["method"] != "retrain"]
    assert lb.build_boards(no_ref) == [] and lb.leaderboard_section(no_ref) is None
    runs = _class_runs() + _random_runs()
    sec = lb.leaderboard_section(runs)
    assert sec is not None and len(sec.data) == 2
    assert "good (reference)" not in sec.markdown and "retrain (reference)" in sec.markdown
    paths = write_reports(runs, tmp_path)  # the registered section reaches every format
    assert "## Leaderboard" in paths["md"].read_text() and "retrain (reference)" in paths["md"].read_text()
    assert "original (no unlearning)" in paths["html"].read_text()
    data = json.loads(paths["json"].read_text())
    (board,) = [s for s in data["sections"] if s["title"] == "Leaderboard"]
    assert [b["kind"] for b in board["data"]] == ["class", "random"]
