"""Training protocols that build the extra models some metrics need, as named resources.

Layer: above :mod:`unlearnkit.methods` and :mod:`unlearnkit.metrics` (a protocol may train, unlearn and
use the metrics' pure functions), below :mod:`unlearnkit.experiments` and the Python API, which make a
:class:`ResourceBuilder` and hand it to :func:`unlearnkit.metrics.evaluate`.

Registered resources:

* ``shadow_bank`` / ``unlearned_shadows`` (:mod:`~unlearnkit.protocols.shadows`): LiRA / U-LiRA shadows;
* ``reference_ensemble`` / ``unlearned_ensemble`` (:mod:`~unlearnkit.protocols.ensembles`): the
  NeurIPS-2023 ε score's N retrained and N unlearned models;
* ``relearn_attack`` (:mod:`~unlearnkit.protocols.relearn`): fine-tuning / RTT attacks and a linear probe
  on the evaluated model.
"""

from __future__ import annotations

from unlearnkit.protocols import ensembles as _ensembles  # noqa: F401  (registers the ε-score ensembles)
from unlearnkit.protocols import relearn as _relearn  # noqa: F401  (registers the relearning attack)
from unlearnkit.protocols import shadows as _shadows  # noqa: F401  (registers the LiRA shadow banks)
from unlearnkit.protocols._base import (
    RESOURCES,
    ModelFactory,
    Resource,
    ResourceBuilder,
    ResourceInputs,
    ResourceMemo,
    list_resources,
    register_resource,
    resource_key,
)
from unlearnkit.protocols.ensembles import forget_quality_eval, forget_quality_of_models
from unlearnkit.protocols.shadows import ShadowBank, run_lira, run_ulira

__all__ = [
    "RESOURCES",
    "ModelFactory",
    "Resource",
    "ResourceBuilder",
    "ResourceInputs",
    "ResourceMemo",
    "ShadowBank",
    "forget_quality_eval",
    "forget_quality_of_models",
    "list_resources",
    "register_resource",
    "resource_key",
    "run_lira",
    "run_ulira",
]
