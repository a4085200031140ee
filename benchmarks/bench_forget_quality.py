"""Time the NeurIPS-2023 forgetting-quality scorer at the challenge's size (N = 512 models, |S| examples).

Usage: ``python benchmarks/bench_forget_quality.py [--n 512 --s 1000 --loop-examples 8 --seed 0 --threads 1]``

In one process, on the same inputs: :func:`unlearnkit.metrics.forget_quality.forget_quality` (the block
search: bounds from a quadrant-max ε table, exact rules only where a bound could win) and the previous
implementation ``_forget_quality_searchsorted`` (every one of the ~160k interval rules of an example counted
with ``np.searchsorted``), both on all |S| examples; they must agree exactly (ε, rule and F). The plain loop
reference ``_forget_quality_loop`` runs on the first ``--loop-examples`` examples, and the published
scorer's outputs on the fixture ``tests/fixtures/forget_quality_official.json`` are checked (F to 1e-9,
ε to 1e-5). ``--device cuda`` also times the torch path there (same results). Targets: new at least 5x the
previous implementation, and under a second for N = 512, |S| = 1000 on an idle core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from unlearnkit.metrics.forget_quality import _forget_quality_loop, _forget_quality_searchsorted, forget_quality

TARGET_RATIO = 5.0
FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "forget_quality_official.json"


def make_confs(n: int, s: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, s] φ for unlearned and retrained models: per example, a random shift (0–1 sd) and scale (0.5–2)."""
    rng = np.random.default_rng(seed)
    retrained = rng.normal(loc=2.0, scale=1.0, size=(n, s))
    shift = rng.uniform(0.0, 1.0, size=s)
    scale = rng.uniform(0.5, 2.0, size=s)
    unlearned = 2.0 + shift + scale * rng.normal(size=(n, s))
    return unlearned, retrained


def _same(a, b) -> bool:
    return np.array_equal(a.epsilons, b.epsilons) and np.array_equal(a.rule, b.rule) and a.F == b.F


def check_fixture() -> bool:
    """The published scorer's F (1e-9) and ε (1e-5) on every fixture case."""
    ok = True
    for case in json.loads(FIXTURE.read_text())["cases"]:
        res = forget_quality(np.array(case["unlearned_conf"]), np.array(case["retrained_conf"]))
        ok &= abs(res.F - case["F"]) <= 1e-9 and bool(np.allclose(res.epsilons, case["epsilons"], rtol=0, atol=1e-5))
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="models per side (N)")
    ap.add_argument("--s", type=int, default=1000, help="forget-set size |S|")
    ap.add_argument("--loop-examples", type=int, default=8, help="examples checked against the loop reference")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: leave as is)")
    ap.add_argument("--device", default=None, help="also time forget_quality(..., device=DEVICE), e.g. cuda")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    u, r = make_confs(args.n, args.s, args.seed)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"N={args.n} |S|={args.s}  python {platform.python_version()}  numpy {np.__version__}  "
          f"torch {torch.__version__}  cpu cores={cores}  torch threads={torch.get_num_threads()}")  # fmt: skip
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")

    forget_quality(u[:, :2], r[:, :2])  # warm-up (imports, allocator)
    _forget_quality_searchsorted(u[:, :2], r[:, :2])
    t0, c0 = time.perf_counter(), time.process_time()
    new = forget_quality(u, r)
    t_new, c_new = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    old = _forget_quality_searchsorted(u, r)
    t_old, c_old = time.perf_counter() - t0, time.process_time() - c0
    rules, counts = np.unique(new.rule, return_counts=True)
    print(f"new (block search):       {t_new:6.2f} s wall, {c_new:6.2f} s CPU ({1e3 * c_new / args.s:.2f} ms/example)"
          f"  F={new.F:.6f}")  # fmt: skip
    print(f"previous (searchsorted):  {t_old:6.2f} s wall, {c_old:6.2f} s CPU ({1e3 * c_old / args.s:.2f} ms/example)"
          f"  F={old.F:.6f}")  # fmt: skip
    print(f"  mean eps={new.epsilons.mean():.3f}  rules: "
          + ", ".join(f"{k}={v}" for k, v in zip(rules, counts, strict=True)))  # fmt: skip
    same = _same(new, old)
    print(f"new == previous on all {args.s} examples (eps, rule, F bit for bit): {same}")

    k = min(args.loop_examples, args.s)
    ref = _forget_quality_loop(u[:, :k], r[:, :k])
    agree = np.array_equal(ref.epsilons, new.epsilons[:k]) and np.array_equal(ref.rule, new.rule[:k])
    print(f"loop reference == new on the first {k} examples: {agree}")
    fixture = check_fixture()
    print(f"published scorer's F and eps on the fixture ({FIXTURE.name}): {'exact' if fixture else 'MISMATCH'}")
    if args.device:
        dev = torch.device(args.device)
        forget_quality(u[:, :2], r[:, :2], device=dev)
        t0 = time.perf_counter()
        on_dev = forget_quality(u, r, device=dev)
        t_dev = time.perf_counter() - t0
        print(f"new on {dev}: {t_dev:.2f} s, same results: {_same(on_dev, new)}")
    ratio = t_old / t_new
    verdict = "PASS" if ratio >= TARGET_RATIO and same and agree and fixture else "FAIL"
    print(f"{verdict}: speed-up {ratio:.1f}x wall, {c_old / c_new:.1f}x process CPU (target >= {TARGET_RATIO:.0f}x), "
          f"results identical: {same and agree}")  # fmt: skip
    print(f"load at end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
