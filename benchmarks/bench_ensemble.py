"""Time the batched ensemble paths (grouped, vmap) against one-by-one (loop) training of N models.

Usage: ``python benchmarks/bench_ensemble.py [--model small_cnn --n 16 --epochs 5 --threads 1
--modes auto,vmap,loop --data digits]``

Trains the same N members (seeds 0..N-1) on the training split of digits (or ``--data mnist1d``)
``random:0.1`` (seed 0) once per mode, in one process: ``auto`` (the fixed rule of
:func:`unlearnkit.engine.ensemble.auto_path`; the path it resolves to is printed), ``fused`` (the members'
own modules, one backward and one fused optimiser step; channels-last convolutions on the CPU),
``grouped`` (one wide network: grouped convolutions, batched matmuls), ``vmap``
(``torch.func`` + ``torch.vmap``; ``--batch-models`` members per step) and ``loop`` (exactly
:func:`unlearnkit.engine.train_model` per seed). Prints wall and process CPU times (on a shared machine
the CPU time of a one-thread run is the fairer measure), loop/path ratios, and how far each path's weights
are from the loop's (float32 rounding, amplified by training; see engine/ensemble.py). No cache is used;
nothing is downloaded. ``--device cuda`` times a GPU (CIFAR-shaped work: ``--model airbench
--data cifar-synthetic``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from torch.utils.data import TensorDataset

import unlearnkit as uk
from unlearnkit.engine import TrainConfig, resolve_device
from unlearnkit.engine.ensemble import ensemble_path, train_ensemble
from unlearnkit.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mlp", help="registered model (mlp, small_cnn, airbench, ...)")
    ap.add_argument("--n", type=int, default=32, help="ensemble size N")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-models", type=int, default=16, help="members per batched step")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    ap.add_argument("--modes", default="auto,vmap,loop", help="comma-separated: auto, fused, grouped, vmap, loop")
    ap.add_argument("--data", default="digits", choices=["digits", "mnist1d", "cifar-synthetic"],
                    help="digits (8x8), mnist1d (1-D, 40 points) or random CIFAR-shaped data (3x32x32, 10 classes, "
                         "--samples)")  # fmt: skip
    ap.add_argument("--samples", type=int, default=1024, help="training samples of --data cifar-synthetic")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    device = resolve_device(args.device)
    if args.data in ("digits", "mnist1d"):
        scenario = uk.Scenario(dataset=args.data, forget="random:0.1", seed=0)
        train, num_classes, in_shape = scenario.train, scenario.bundle.num_classes, scenario.bundle.in_shape
    else:
        g = torch.Generator().manual_seed(0)
        train = TensorDataset(torch.rand(args.samples, 3, 32, 32, generator=g),
                              torch.randint(0, 10, (args.samples,), generator=g))  # fmt: skip
        num_classes, in_shape = 10, (3, 32, 32)

    def make_model() -> torch.nn.Module:
        return create_model(args.model, num_classes, in_shape)

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size)  # adam, lr 1e-3, cosine
    seeds = list(range(args.n))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n_params = sum(p.numel() for p in make_model().parameters())
    auto = ensemble_path("auto", make_model, train, device)
    print(
        f"{args.model} ({n_params} params) N={args.n} epochs={args.epochs} |D|={len(train)} "
        f"batch_models={args.batch_models} device={device}  python {platform.python_version()} "
        f"torch {torch.__version__} cpu cores={cores} torch threads={torch.get_num_threads()}  auto -> {auto}"
    )
    print(f"load at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")

    warm = TrainConfig(epochs=1, batch_size=args.batch_size)
    for mode in {m for m in modes if m != "loop"}:  # warm-up (allocator, kernels)
        train_ensemble(make_model, train, warm, [0, 1], device=device, mode=mode)
    times, cpu, models = {}, {}, {}
    for mode in modes:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        models[mode] = train_ensemble(make_model, train, cfg, seeds, device=device,
                                      batch_models=args.batch_models, mode=mode)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize()
        times[mode], cpu[mode] = time.perf_counter() - t0, time.process_time() - c0
        label = f"{mode} ({auto})" if mode == "auto" else mode
        print(f"{label:>15}: wall {times[mode]:7.1f} s ({times[mode] / args.n:.3f} s/model), "
              f"process CPU {cpu[mode]:7.1f} s ({cpu[mode] / args.n:.3f} s/model)", flush=True)  # fmt: skip
    print(f"load at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if "loop" in times:
        for mode in modes:
            if mode == "loop":
                continue
            diff = max(
                (a.state_dict()[k].double() - b_.state_dict()[k].double()).abs().max().item()
                for a, b_ in zip(models[mode], models["loop"], strict=True)
                for k in a.state_dict()
            )
            print(f"{mode}: speed-up over the loop {times['loop'] / times[mode]:.2f}x wall, "
                  f"{cpu['loop'] / cpu[mode]:.2f}x process CPU; "
                  f"max |w - w_loop| = {diff:.2e} (float32 rounding, amplified by training)")  # fmt: skip


if __name__ == "__main__":
    main()
