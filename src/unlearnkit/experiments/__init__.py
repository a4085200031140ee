"""Experiments: typed configs, the resumable runner and the SQLite results store."""

from __future__ import annotations

from unlearnkit.experiments.config import MethodSpec, RunConfig, TrainSection, load_config, parse_config
from unlearnkit.experiments.runner import (
    BenchmarkResult,
    Cell,
    InProcessExecutor,
    drive,
    plan,
    run_benchmark,
    run_cell,
    validate_config,
)
from unlearnkit.experiments.store import SCHEMA_VERSION, ResultsStore

__all__ = [
    "SCHEMA_VERSION",
    "BenchmarkResult",
    "Cell",
    "InProcessExecutor",
    "MethodSpec",
    "ResultsStore",
    "RunConfig",
    "TrainSection",
    "drive",
    "load_config",
    "parse_config",
    "plan",
    "run_benchmark",
    "run_cell",
    "validate_config",
]
