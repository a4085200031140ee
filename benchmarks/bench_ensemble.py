"""Time batched (torch.func + vmap) against one-by-one (loop) training of an ensemble of N models.

Usage: ``python benchmarks/bench_ensemble.py [--model mlp --n 32 --epochs 10 --batch-models 16 --device cpu]``

Trains the same N members (seeds 0..N-1) on the training split of digits ``random:0.1`` (seed 0) twice in
one run: with :func:`unlearnkit.engine.ensemble.train_ensemble` in ``mode="vmap"`` (``--batch-models``
models per vectorised step) and in ``mode="loop"`` (exactly :func:`unlearnkit.engine.train_model` per
seed). Prints both wall times, the loop/vmap ratio, and how far the two paths' weights are apart (float32
rounding; see engine/ensemble.py). No cache is used. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

import unlearnkit as uk
from unlearnkit.engine import TrainConfig, resolve_device
from unlearnkit.engine.ensemble import train_ensemble
from unlearnkit.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mlp", help="registered model (mlp, small_cnn, ...)")
    ap.add_argument("--n", type=int, default=32, help="ensemble size N")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-models", type=int, default=16, help="members per vmapped batch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    scenario = uk.Scenario(dataset="digits", forget="random:0.1", seed=0)
    b = scenario.bundle

    def make_model() -> torch.nn.Module:
        return create_model(args.model, b.num_classes, b.in_shape)

    cfg = TrainConfig(epochs=args.epochs)  # the default recipe: adam, lr 1e-3, batch 64, cosine
    seeds = list(range(args.n))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n_params = sum(p.numel() for p in make_model().parameters())
    print(
        f"{args.model} ({n_params} params) N={args.n} epochs={args.epochs} |D|={len(scenario.train)} "
        f"batch_models={args.batch_models} device={device}  python {platform.python_version()} "
        f"torch {torch.__version__} cpu cores={cores} torch threads={torch.get_num_threads()}"
    )

    train_ensemble(make_model, scenario.train, TrainConfig(epochs=1), [0, 1], device=device, mode="vmap")  # warm-up
    times, models = {}, {}
    for mode in ("vmap", "loop"):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        models[mode] = train_ensemble(make_model, scenario.train, cfg, seeds, device=device,
                                      batch_models=args.batch_models, mode=mode)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize()
        times[mode] = time.perf_counter() - t0
        print(f"{mode:>4}: {times[mode]:.1f} s ({times[mode] / args.n:.2f} s/model)")
    diff = max(
        (a.state_dict()[k].double() - b_.state_dict()[k].double()).abs().max().item()
        for a, b_ in zip(models["vmap"], models["loop"], strict=True)
        for k in a.state_dict()
    )
    print(f"max |w_vmap - w_loop| over all members and tensors: {diff:.2e} (float32 rounding, amplified by training)")
    print(f"speed-up (loop / vmap): {times['loop'] / times['vmap']:.2f}x")


if __name__ == "__main__":
    main()
