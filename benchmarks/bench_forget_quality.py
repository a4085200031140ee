"""Time the NeurIPS-2023 forgetting-quality scorer at the challenge's size (N = 512 models, |S| examples).

Usage: ``python benchmarks/bench_forget_quality.py [--n 512 --s 1000 --loop-examples 8 --seed 0]``

Times :func:`unlearnkit.metrics.forget_quality.forget_quality` (vectorised: sort + searchsorted + ε table)
on all |S| examples, and in the same run the plain loop reference ``_forget_quality_loop`` on the first
``--loop-examples`` examples only; the loop's time for |S| examples is extrapolated from its per-example
time (the work per example is about the same: ~160k interval rules + ~100 single thresholds per unit of φ).
Both are checked to agree on the subset. The target is under 60 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from unlearnkit.metrics.forget_quality import _forget_quality_loop, forget_quality

TARGET_S = 60.0


def make_confs(n: int, s: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, s] φ for unlearned and retrained models: per example, a random shift (0–1 sd) and scale (0.5–2)."""
    rng = np.random.default_rng(seed)
    retrained = rng.normal(loc=2.0, scale=1.0, size=(n, s))
    shift = rng.uniform(0.0, 1.0, size=s)
    scale = rng.uniform(0.5, 2.0, size=s)
    unlearned = 2.0 + shift + scale * rng.normal(size=(n, s))
    return unlearned, retrained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="models per side (N)")
    ap.add_argument("--s", type=int, default=1000, help="forget-set size |S|")
    ap.add_argument("--loop-examples", type=int, default=8, help="examples timed with the loop reference")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    u, r = make_confs(args.n, args.s, args.seed)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"N={args.n} |S|={args.s}  python {platform.python_version()}  numpy {np.__version__}  cpu cores={cores}")

    forget_quality(u[:, :2], r[:, :2])  # warm-up (imports, allocator)
    t0 = time.perf_counter()
    res = forget_quality(u, r)
    t_vec = time.perf_counter() - t0
    rules, counts = np.unique(res.rule, return_counts=True)
    print(f"vectorised: {t_vec:.2f} s for {args.s} examples ({1e3 * t_vec / args.s:.2f} ms/example)  F={res.F:.6f}")
    print(
        f"  mean eps={res.epsilons.mean():.3f}  rules: "
        + ", ".join(f"{k}={v}" for k, v in zip(rules, counts, strict=True))
    )

    k = min(args.loop_examples, args.s)
    t0 = time.perf_counter()
    ref = _forget_quality_loop(u[:, :k], r[:, :k])
    t_loop_k = time.perf_counter() - t0
    per_ex = t_loop_k / k
    t_loop = per_ex * args.s
    agree = np.array_equal(ref.epsilons, res.epsilons[:k]) and np.array_equal(ref.rule, res.rule[:k])
    print(
        f"loop reference: {t_loop_k:.2f} s for {k} examples ({1e3 * per_ex:.1f} ms/example); "
        f"extrapolated to {args.s} examples: {t_loop:.1f} s"
    )
    print(f"loop == vectorised on those {k} examples: {agree}")
    print(f"speed-up (extrapolated loop / vectorised): {t_loop / t_vec:.1f}x")
    verdict = "PASS" if t_vec < TARGET_S else "FAIL"
    print(f"{verdict}: vectorised {t_vec:.2f} s {'<' if t_vec < TARGET_S else '>='} {TARGET_S:.0f} s target")


if __name__ == "__main__":
    main()
