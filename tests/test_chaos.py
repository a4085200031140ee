"""Issue 13's chaos test: a benchmark killed with SIGKILL at five random moments, with a cache file corrupted
between two of the kills, finishes with the same rows and non-timing values as an uninterrupted run.

Slow (several subprocess runs of a small benchmark): ``python -m pytest -m slow tests/test_chaos.py``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from unlearnkit.experiments import ResultsStore

pytestmark = pytest.mark.slow

#: metrics that measure the machine, not the model
TIMING = ("time_s", "time_ratio_vs_retrain", "peak_mem_mb", "retrain_time_s")
CONFIG = {
    "name": "chaos", "dataset": "digits", "model": "mlp", "forget": ["class:3", "random:0.1"],
    "methods": ["finetune", "neggrad_plus"], "seeds": [0], "train": {"epochs": 4}, "device": "cpu",
}  # fmt: skip


def _run(cfg: Path, out: Path, cache: Path, *, kill_after: float | None = None) -> int | None:
    """Run the benchmark in a subprocess; SIGKILL it after ``kill_after`` seconds (None: let it finish)."""
    env = {**os.environ, "UNLEARNKIT_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "unlearnkit.cli", "run", "--config", str(cfg), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if kill_after is None:
        out_text, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out_text.decode()
        return proc.returncode
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < kill_after:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return proc.returncode


def _values(out: Path) -> dict[tuple[str, str, str], dict]:
    runs = ResultsStore(out / "results.db").runs()
    rows = {}
    for r in runs:
        assert r["status"] == "ok", r["error"]
        ident = (r["scenario"]["forget"], r["method"], r["key"])
        assert ident not in rows  # nothing duplicated
        rows[ident] = {k: v for k, v in r["metrics"].items() if k not in TIMING}
    return rows


def _corrupt_one(cache: Path) -> bool:
    """Truncate every cached checkpoint (the cache must notice, set them aside and retrain)."""
    files = sorted((cache / "models").glob("*.safetensors")) if (cache / "models").is_dir() else []
    for f in files:
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
    return bool(files)


def test_sigkill_at_five_moments_changes_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "chaos.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    t0 = time.monotonic()
    _run(cfg, tmp_path / "ref", tmp_path / "cache_ref")
    full = time.monotonic() - t0
    reference = _values(tmp_path / "ref")

    rng = random.Random(0)
    out, cache = tmp_path / "chaos", tmp_path / "cache_chaos"
    corrupted = False
    for i in range(5):
        _run(cfg, out, cache, kill_after=rng.uniform(0.3, 0.9) * full)
        if i >= 1 and not corrupted:  # between two kills, as soon as a model is cached
            corrupted = _corrupt_one(cache)
    if not corrupted:  # the kills came before any model was cached: corrupt one now, before the last run
        corrupted = _corrupt_one(cache)
    _run(cfg, out, cache)
    assert corrupted  # (that a damaged entry is set aside and retrained is asserted in test_cache_integrity.py)
    got = _values(out)
    assert {k[:2] for k in got} == {k[:2] for k in reference}
    assert len(got) == len(reference) == 8
    for k, v in reference.items():
        assert got[k] == v, k
