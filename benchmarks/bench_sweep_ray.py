"""The same 16-cell sweep in-process and on a local Ray, in one run: wall times and Ray's overhead per task.

Usage: ``python benchmarks/bench_sweep_ray.py [--config benchmarks/sweep_digits_16.yaml --num-cpus 2]``

Each backend gets its own fresh artifacts directory, so both train their 4 reference models. Measured:

* in-process wall time (cells one after another, ``--threads`` torch threads: 1 by default, because on a
  shared, oversubscribed machine multi-threaded torch slows down badly; on a quiet machine try the core count);
* Ray: ``ray.init`` time, the cold start of the workers (importing torch + unlearnkit in a new worker
  process, timed inside the worker), and the sweep's wall time (one task per reference model and per
  cell, ``num_cpus`` per task from the config);
* Ray's per-task overhead on warm workers: a no-op task that takes a real ``Cell`` and returns a record-sized
  dict, (a) one at a time (round-trip latency) and (b) 200 submitted at once (throughput);
* the per-model training time (small_cnn on digits, the config's recipe), read from the model-cache sidecars —
  the figure docs/scaling.md scales from.

Also checks that the two backends stored the same keys and statuses. The machine is shared: run it once and
read the figures as indications, not as a stable benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch

from unlearnkit.experiments import ResultsStore
from unlearnkit.experiments.sweep import load_sweep, plan_sweep, run_sweep


def _cold_import() -> float:
    """Seconds this worker needs to import what a cell task imports (0 if already imported)."""
    t0 = time.perf_counter()
    import unlearnkit.experiments.ray_backend  # noqa: F401

    return time.perf_counter() - t0


def _noop(cell: object) -> dict:
    return {"key": getattr(cell, "key", ""), "metrics": {f"m{i}": float(i) for i in range(20)}}


def _model_times(art: Path) -> list[tuple[str, float]]:
    out = []
    for side in sorted((art / "models").glob("*.json")):  # sidecar: {"key": {..., "role"}, "info": {"time_s"}}
        meta = json.loads(side.read_text())
        if "time_s" in meta.get("info", {}):
            out.append((str(meta.get("key", {}).get("role", "?")), float(meta["info"]["time_s"])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(Path(__file__).with_name("sweep_digits_16.yaml")))
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the in-process run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    sweep = load_sweep(args.config)
    n_cells = len(plan_sweep(sweep).cells)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    versions = f"python {platform.python_version()} torch {torch.__version__} ray {ray.__version__}"
    print(f"{sweep.source}: {n_cells} cells; {versions}; cores={cores} load avg={load:.1f} "
          f"torch threads={torch.get_num_threads()}")  # fmt: skip

    root = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    walls: dict[str, float] = {}
    trained: dict[str, int] = {}
    for backend in ("inprocess", "ray"):
        sweep.artifacts = str(root / backend / "art")
        if backend == "ray":
            t0 = time.perf_counter()
            ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            t_init = time.perf_counter() - t0
            cold = ray.get([ray.remote(num_cpus=1)(_cold_import).remote() for _ in range(args.num_cpus)])
            print(f"ray.init: {t_init:.1f} s; worker cold start (import torch+unlearnkit): "
                  + ", ".join(f"{c:.1f} s" for c in cold))  # fmt: skip
        t0 = time.perf_counter()
        res = run_sweep(sweep, root / backend / "out", backend=backend)
        walls[backend] = time.perf_counter() - t0
        trained[backend] = res.trained_models
        print(f"{backend}: {res.ran} cells ({res.failed} failed), {res.trained_models} models trained, "
              f"wall {walls[backend]:.1f} s")  # fmt: skip
        times = _model_times(root / backend / "art")
        if times:
            per = ", ".join(f"{role} {t:.1f} s" for role, t in times)
            print(f"  per-model training time ({backend}): {per}; mean {statistics.mean(t for _, t in times):.1f} s")

    # Ray's overhead per task on warm workers
    cell = plan_sweep(sweep).cells[0]
    noop = ray.remote(num_cpus=1)(_noop)
    ray.get([noop.remote(cell) for _ in range(args.num_cpus)])  # warm
    lat = []
    for _ in range(30):
        t0 = time.perf_counter()
        ray.get(noop.remote(cell))
        lat.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ray.get([noop.remote(cell) for _ in range(200)])
    batch = (time.perf_counter() - t0) / 200
    ray.shutdown()
    rt = 1e3 * statistics.median(lat)
    print(f"ray per-task overhead (warm, no-op task taking a Cell): round trip median {rt:.1f} ms, "
          f"pipelined {1e3 * batch:.1f} ms/task")  # fmt: skip
    n_ref = trained["ray"]
    print(
        f"ray sweep wall / in-process wall = {walls['ray'] / walls['inprocess']:.2f} ({n_cells + n_ref} tasks: "
        f"{n_cells} cells + {n_ref} reference models; excludes ray.init and the workers' cold start)"
    )

    a = {r["key"]: r["status"] for r in ResultsStore(root / "inprocess" / "out" / "results.db").runs()}
    b = {r["key"]: r["status"] for r in ResultsStore(root / "ray" / "out" / "results.db").runs()}
    print(f"same keys and statuses in both stores: {a == b}  (outputs in {root})")


if __name__ == "__main__":
    main()
