"""The talk-layout report section: measured rows computed from the runs, the talk's figures as labelled references."""

from __future__ import annotations

import json

import pytest

import unlearnkit.methods.untrain  # noqa: F401  (a registered setting-1 method, until methods/__init__ imports it)
from unlearnkit.reports import SECTIONS, write_reports
from unlearnkit.reports.talk import TITLE, reference_rows, talk_layout, talk_tables


def _run(method: str, forget: str, seed: int, af: float, ar: float, test: float, t: float, ratio: float,
         dataset: str = "digits", status: str = "ok") -> dict:  # fmt: skip
    return {
        "scenario": {"dataset": dataset, "forget": forget, "seed": seed, "val_fraction": 0.1},
        "model": "small_cnn", "method": method, "params": {} if method in ("retrain", "original") else {"lam": 10.0},
        "seed": seed, "status": status, "error": None if status == "ok" else "boom",
        "setting": None if method == "original" else 1,  # recorded with the run (reports never ask the registry)
        "metrics": {"acc_forget_test": af, "acc_retain_test": ar, "acc_test": test, "time_s": t,
                    "time_ratio_vs_retrain": ratio},
    }  # fmt: skip


def _runs(dataset: str = "digits") -> list[dict]:
    runs = []
    for i, (forget, seed) in enumerate([("class:1", 0), ("class:1", 1), ("class:3", 0), ("class:3", 1)]):
        runs.append(_run("retrain", forget, seed, 0.0, 0.97, 0.88, 30.0 + i, 1.0, dataset))
        runs.append(_run("original", forget, seed, 1.0, 0.98, 0.98, 31.0, 1.03, dataset))
        runs.append(_run("untrain", forget, seed, 0.01 * i, 0.96 - 0.01 * i, 0.87, 1.0 + i, 0.03 + 0.01 * i, dataset))
    # neither a random request nor a failed run may enter the measured means
    runs.append(_run("untrain", "random:0.1", 0, 0.9, 0.1, 0.1, 99.0, 9.0, dataset))
    runs.append(_run("untrain", "class:7", 0, 0.9, 0.1, 0.1, 99.0, 9.0, dataset, status="failed"))
    return runs


def _row(md: str, source_prefix: str, method: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith(source_prefix) and cells[1] == method:
            return cells
    raise AssertionError(f"no row {source_prefix!r} / {method!r} in\n{md}")


def test_section_is_registered():
    assert "talk_layout" in SECTIONS.list()


def test_measured_rows_are_means_over_class_runs():
    sec = talk_layout(_runs())
    assert sec is not None and sec.title == TITLE
    cells = _row(sec.markdown, "measured: digits/small_cnn", "untrain")
    # independent means over the 4 class runs (class:1, class:3 × seeds 0, 1), in percent
    assert cells[2] == f"{100 * (0.96 + 0.95 + 0.94 + 0.93) / 4:.2f}"  # Acc_r = acc_retain_test
    assert cells[3] == f"{100 * (0.0 + 0.01 + 0.02 + 0.03) / 4:.2f}"  # Acc_f = acc_forget_test
    assert cells[4] == "87.00"  # test
    assert cells[5] == f"{(1 + 2 + 3 + 4) / 4:.2f}" and cells[6] == f"{(0.03 + 0.04 + 0.05 + 0.06) / 4:.3f}"
    assert _row(sec.markdown, "measured", "retrain")[3] == "0.00"
    table = sec.data["tables"][0]
    untrain = next(r for r in table["measured"] if r["method"] == "untrain")
    assert untrain["n_runs"] == 4 and untrain["requests"] == ["class:1", "class:3"]
    assert untrain["acc_f"] == pytest.approx(0.015)  # fractions in the data, percent only in the table


def test_reference_rows_are_labelled_and_come_from_the_talk():
    sec = talk_layout(_runs(), all_references=True)
    # digits, asked for every reference: the talk has no figures, so its MNIST and CIFAR-10 figures are shown
    ref = _row(sec.markdown, "talk, MNIST/VGG16 (reference)", "wfnet")
    vgg = next(r for r in talk_tables()["wfnet_class_unlearning"]["models"]["vgg16"] if r["method"] == "wfnet")
    assert ref[2] == f"{vgg['mnist_acc_r']:.2f}" and ref[3] == f"{vgg['mnist_acc_f']:.2f}" and ref[4] == "—"
    bs = _row(sec.markdown, "talk, CIFAR-10/All-CNN (reference)", "boundary_shrink")
    assert bs[2:4] == ["99.24", "5.94"]
    assert "has no figures for digits" in sec.markdown
    assert "talk, MNIST/VGG16" in sec.html and "(reference)" in sec.html
    # every reference row is labelled as the talk's, apart from the measured ones
    assert all(r["source"].startswith("talk, ") for r in sec.data["tables"][0]["reference"])


def test_reference_rows_follow_the_measured_dataset():
    sec = talk_layout(_runs("cifar10"), all_references=True)
    sources = {r["source"] for r in sec.data["tables"][0]["reference"]}
    assert "talk, CIFAR-10/All-CNN" in sources and "talk, CIFAR-10/ResNet-18" in sources
    assert not any("MNIST" in s for s in sources)
    assert {r["dataset"] for r in reference_rows("mnist")} == {"MNIST"}
    assert reference_rows("digits") == []


def test_no_section_without_class_runs_of_setting1_methods():
    random_only = [r for r in _runs() if r["scenario"]["forget"].startswith("random")]
    assert talk_layout(random_only) is None
    assert talk_layout([_run("original", "class:1", 0, 1.0, 0.98, 0.98, 31.0, 1.0)]) is None


def test_the_section_is_in_every_report_format(tmp_path):
    paths = write_reports(_runs(), tmp_path)
    assert f"## {TITLE}" in paths["md"].read_text(encoding="utf-8")
    assert "No reference rows: the talk publishes no figures for digits" in paths["html"].read_text(encoding="utf-8")
    sections = json.loads(paths["json"].read_text(encoding="utf-8"))["sections"]
    assert any(s["title"] == TITLE and s["data"]["tables"][0]["dataset"] == "digits" for s in sections)
