"""unlearnkit: make a trained model forget data, classes or concepts, and prove how well it did.

The public API::

    import unlearnkit as uk
    scenario = uk.Scenario(dataset="digits", forget="class:3", seed=0)
    original = uk.train("small_cnn", scenario)              # on D = D_r ∪ D_f
    retrained = uk.train("small_cnn", scenario, on="retain")
    unlearned = uk.unlearn("neggrad_plus", original, scenario, lr=1e-3)
    print(uk.evaluate(unlearned, scenario, reference=retrained))
"""

from __future__ import annotations

from unlearnkit._meta import __version__, _version  # noqa: F401  (_version: the release test reads it)
from unlearnkit.api import (
    TrainRecipe,
    benchmark,
    elapsed_of,
    evaluate,
    export_towers,
    recipe_of,
    threads_of,
    train,
    tune,
    unlearn,
)
from unlearnkit.data import DatasetBundle, from_torch, list_datasets, load_dataset
from unlearnkit.engine import TrainConfig, load_checkpoint, save_checkpoint
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import Method, UnlearnData, create_method, list_methods, register_method
from unlearnkit.metrics import NotComputed, list_metrics, register_metric
from unlearnkit.models import create_model, list_models, register_model
from unlearnkit.scenario import ForgetRequest, Scenario

__all__ = [
    "DatasetBundle",
    "ForgetRequest",
    "Method",
    "NotComputed",
    "Scenario",
    "TrainConfig",
    "TrainRecipe",
    "UnlearnData",
    "UnlearnkitError",
    "__version__",
    "benchmark",
    "create_method",
    "create_model",
    "elapsed_of",
    "evaluate",
    "export_towers",
    "from_torch",
    "list_datasets",
    "list_methods",
    "list_metrics",
    "list_models",
    "load_checkpoint",
    "load_dataset",
    "recipe_of",
    "register_method",
    "register_metric",
    "register_model",
    "save_checkpoint",
    "threads_of",
    "train",
    "tune",
    "unlearn",
]
