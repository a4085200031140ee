"""What the two Boundary Unlearning methods share: the request contract and the fine-tuning recipe.

Paper: "Boundary Unlearning: Rapid Forgetting of Deep Networks via Shifting the Decision Boundary",
Min Chen, Weizhuo Gao, Gaoyang Liu, Kai Peng, Chen Wang; CVPR 2023 (arXiv 2303.11570).

Boundary Shrink (:mod:`~unlearnkit.methods.boundary_shrink`) and Boundary Expanding
(:mod:`~unlearnkit.methods.boundary_expand`) both move a *class's* forget samples across a decision
boundary, so they serve class requests only (several classes at once included), and both need only D_f:
each fine-tunes the whole network on D_f toward new labels with the recipe of the authors' code (an
optimizer, SGD with momentum there; a learning rate, a number of epochs and a batch size). Each method
file sets its own defaults and runs its own algorithm.
"""

from __future__ import annotations

from typing import Any

from unlearnkit.methods._base import OPTIMIZER, POSITIVE, POSITIVE_INT, Interval, Method

#: what the fine-tuning recipe's hyperparameters accept (momentum in [0, 1))
FINETUNE_CONSTRAINTS: dict[str, list[Any]] = {
    "epochs": [POSITIVE_INT],
    "lr": [POSITIVE],
    "optimizer": [OPTIMIZER],
    "momentum": [Interval(float, 0.0, 1.0, "left")],
    "batch_size": [POSITIVE_INT],
}


class BoundaryMethod(Method):
    """Base of the Boundary Unlearning methods: class requests, D_f only, the fine-tuning recipe.

    Subclasses take at least ``epochs``, ``lr``, ``optimizer``, ``momentum`` and ``batch_size`` in
    ``__init__`` (checked by :data:`FINETUNE_CONSTRAINTS`) and implement ``_unlearn``.
    """

    needs = frozenset({"forget"})
    requests = frozenset({"class"})
    multi_class = True
    example_model = "mlp"
    _parameter_constraints = dict(FINETUNE_CONSTRAINTS)

    epochs: int
    lr: float
    optimizer: str
    momentum: float
    batch_size: int
