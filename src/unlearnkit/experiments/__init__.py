"""Experiments: typed configs, the resumable runner and the SQLite results store."""

from __future__ import annotations

from unlearnkit.experiments.config import MethodSpec, RunConfig, TrainSection, load_config, parse_config
from unlearnkit.experiments.runner import BenchmarkResult, run_benchmark, validate_config
from unlearnkit.experiments.store import SCHEMA_VERSION, ResultsStore

__all__ = [
    "SCHEMA_VERSION",
    "BenchmarkResult",
    "MethodSpec",
    "ResultsStore",
    "RunConfig",
    "TrainSection",
    "load_config",
    "parse_config",
    "run_benchmark",
    "validate_config",
]
