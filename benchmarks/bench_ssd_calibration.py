"""Why SSD's defaults are what they are on a 10-class problem (methods/ssd.py), measured on proxy requests only.

Usage: ``python benchmarks/bench_ssd_calibration.py [--classes 0,2,4,5,6,8,9] [--seeds 1000,1001,1002,1003]``

For each seed, trains the original (on D) and, per class request, the retrained model (on D_r) of digits /
small_cnn with the setting-1 benchmarks' recipe; then prints, per request:

1. the distribution of I_f/I_D over all parameter entries (median, 90th, 99th percentile; the bound is
   |D|/|D_f|) for the released code's batch estimate and for per-sample importances;
2. forget / retain-test accuracy (as a gap to the retrained model) of per-sample SSD at fixed α = 4 and 6
   (λ = 1): no single α suits every class;
3. the calibrated α (``selection_weighting=None``: the mildest α that forgets within ``retain_tolerance`` of
   held-out retain accuracy) at the defaults (retain tolerance 0.02, forget tolerance 0), at retain tolerance
   0.01, at forget tolerance 0.02, and without a validation split (calibrated on the training retain set),
   with their means.

The default classes and seeds are disjoint from every evaluated request of the shipped benchmarks (classes
1, 3, 7; seeds 0-2), so nothing here is tuned on what the benchmarks report. Measured 2026-12-06 (2-core
CPU, load 8-16), 28 requests (classes 0/2/4/5/6/8/9 x seeds 1000-1003): see the closing note of issue 16 and
rerun this script for the figures; the defaults were chosen from them (every request forgotten but one,
mean retain-accuracy gap to retrain about -0.002).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import ConcatDataset

import unlearnkit as uk
from unlearnkit.engine import TrainConfig
from unlearnkit.methods import UnlearnData
from unlearnkit.methods.ssd import SelectiveSynapticDampening, diagonal_importance, per_sample_importance

RECIPE = TrainConfig(epochs=30, lr=1e-3, batch_size=64, optimizer="adam", weight_decay=5e-4, scheduler="cosine")


def accuracy(model: torch.nn.Module, ds) -> float:
    model.eval()
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([int(ds[i][1]) for i in range(len(ds))])
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def ratio_summary(model: torch.nn.Module, scn: uk.Scenario, estimate) -> str:
    dev = torch.device("cpu")
    full = ConcatDataset([scn.split("retain"), scn.split("forget")])
    i_f = estimate(model.eval(), scn.split("forget"), 128, dev, "forget")
    i_d = estimate(model.eval(), full, 128, dev, "train")
    r = torch.cat([(i_f[n] / i_d[n].clamp_min(1e-30)).flatten() for n in i_f]).double()
    q = torch.quantile(r, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)).tolist()
    return f"median {q[0]:.2f}, p90 {q[1]:.2f}, p99 {q[2]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", default="0,2,4,5,6,8,9")
    ap.add_argument("--seeds", default="1000,1001,1002,1003")
    args = ap.parse_args()
    torch.set_num_threads(1)
    variants = {
        "alpha=4": ({"selection_weighting": 4.0}, True),
        "alpha=6": ({"selection_weighting": 6.0}, True),
        "calibrated": ({}, True),
        "retain_tol 0.01": ({"retain_tolerance": 0.01}, True),
        "forget_tol 0.02": ({"forget_tolerance": 0.02}, True),
        "calibrated, no val": ({}, False),
    }
    for seed in (int(s) for s in args.seeds.split(",")):
        original = None
        sums = {k: [0.0, 0.0, 0] for k in variants}
        for c in (int(c) for c in args.classes.split(",")):
            scn = uk.Scenario(dataset="digits", forget=f"class:{c}", seed=seed)
            if original is None:
                original = uk.train("small_cnn", scn, config=RECIPE, seed=seed)
            retrained = uk.train("small_cnn", scn, on="retain", config=RECIPE, seed=seed)
            ref = accuracy(retrained, scn.split("retain_test"))
            print(f"seed {seed} class {c}: I_f/I_D batch: {ratio_summary(original, scn, diagonal_importance)}")
            print(f"seed {seed} class {c}: I_f/I_D per-sample: {ratio_summary(original, scn, per_sample_importance)}")
            for name, (params, with_val) in variants.items():
                data = UnlearnData.from_scenario(
                    scn, device="cpu", provide=("forget", "retain", "val")[: 3 if with_val else 2]
                )
                method = SelectiveSynapticDampening(**params)
                out = method.unlearn(original, data)
                f, gap = accuracy(out, scn.split("forget_test")), accuracy(out, scn.split("retain_test")) - ref
                sums[name][0] += f
                sums[name][1] += gap
                sums[name][2] += 1
                print(f"  {name:<17} alpha {method.report_['ssd_alpha']:6.2f}  forget {f:.3f}  retain gap {gap:+.4f}")
        for name, (f, gap, n) in sums.items():
            print(f"seed {seed} mean {name:<17} forget {f / n:.3f}  retain gap {gap / n:+.4f}")


if __name__ == "__main__":
    main()
