"""Boundary Expanding: send the forget class to an extra "shadow" class, then prune that class away.

Paper: "Boundary Unlearning: Rapid Forgetting of Deep Networks via Shifting the Decision Boundary",
Min Chen, Weizhuo Gao, Gaoyang Liu, Kai Peng, Chen Wang; CVPR 2023 (arXiv 2303.11570). Specified from
the authors' released code (spec §5.2, ``boundary_expanding``).

1. Widen the classifier head from N to N + 1 outputs: rows 0…N−1 copy the old weights and bias, the
   shadow row N is Xavier-initialised (bias 0).
2. Fine-tune the *whole* network on D_f with every label set to the shadow class N: L = CE(f(x), N).
3. Prune the shadow neuron: copy rows 0…N−1 back into an N-output head. The forget samples now sit in a
   region whose class no longer exists, so their predictions scatter over the remaining classes.

The head is found generically: the last ``nn.Linear`` in ``model.modules()`` whose ``out_features`` is
the number of classes (``fc`` of a ResNet, ``head`` of the small CNN or a timm ViT, the last layer of a
VGG classifier). A model without one is refused before any work. The returned model has the original
architecture (same ``state_dict`` keys and shapes).

Choices (hyperparameters): the code's SGD lr 1e-5 (momentum 0.9, 10 epochs, batch 64) is for an All-CNN
on CIFAR-10 and does not move the small offline models; the defaults (SGD lr 1e-3, momentum 0.9, 10
epochs, batches of 32) are tuned on digits/small_cnn [CHOICE]; there (classes 1, 3, 7 × 3 seeds) they leave
the forget class's test accuracy at ≈ 0.24 for ≈ 2.9 points of retain test accuracy: Boundary Expanding
forgets less than Boundary Shrink, as in the talk's CIFAR-10 table. The model trains in ``train()`` mode,
batch norm included, as in the code (freezing batch norm cost far more retain accuracy on digits). Only
class requests are served (the method remaps a *class*); several classes at once share the one shadow
class.

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``lr`` log-uniform [1e-4, 1e-2]; ``epochs`` integer [1, 10]. The ranges bracket the defaults and stay inside
``_parameter_constraints``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.engine import check_finite, iterate, make_optimizer
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods._base import IntRange, LogUniform, UnlearnData, register_method
from unlearnkit.methods._boundary import BoundaryMethod


def find_head(model: nn.Module, num_classes: int) -> tuple[nn.Module, str, nn.Linear]:
    """The classifier head: the last ``nn.Linear`` with ``out_features == num_classes``.

    Returns:
        ``(parent, attribute, linear)`` so that ``setattr(parent, attribute, new)`` replaces the head.

    Raises:
        UnlearnkitError: the model has no such layer.
    """
    found: tuple[str, nn.Linear] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and mod.out_features == num_classes:
            found = (name, mod)
    if found is None:
        raise UnlearnkitError(
            f"boundary_expand needs a final nn.Linear layer with {num_classes} outputs (the classifier head); "
            f"{type(model).__name__} has none"
        )
    name, linear = found
    if not name:
        raise UnlearnkitError("boundary_expand: the model is a bare nn.Linear; wrap it in a module to widen its head")
    parent_name, _, attr = name.rpartition(".")
    return model.get_submodule(parent_name), attr, linear


def widen(linear: nn.Linear, generator: torch.Generator) -> nn.Linear:
    """A copy of ``linear`` with one extra output row (Xavier-initialised weight, zero bias)."""
    n, d = linear.out_features, linear.in_features
    wide = nn.Linear(d, n + 1, bias=linear.bias is not None).to(linear.weight.device, linear.weight.dtype)
    with torch.no_grad():
        shadow = torch.empty(1, d)
        nn.init.xavier_uniform_(shadow, generator=generator)  # the shadow class's row
        wide.weight.copy_(torch.cat([linear.weight.detach().cpu(), shadow]).to(wide.weight))
        if linear.bias is not None:
            wide.bias.copy_(torch.cat([linear.bias.detach().cpu(), torch.zeros(1)]).to(wide.bias))
    return wide


def prune(wide: nn.Linear) -> nn.Linear:
    """The head without its last (shadow) output: rows 0…N−1 copied back."""
    n = wide.out_features - 1
    head = nn.Linear(wide.in_features, n, bias=wide.bias is not None).to(wide.weight.device, wide.weight.dtype)
    with torch.no_grad():
        head.weight.copy_(wide.weight[:n])
        if wide.bias is not None:
            head.bias.copy_(wide.bias[:n])
    return head


@register_method("boundary_expand")
class BoundaryExpand(BoundaryMethod):
    """Fine-tune on D_f labelled as an extra shadow class, then prune the shadow class (Chen et al., CVPR 2023).

    Class requests only, D_f only; the hyperparameters are the fine-tuning recipe (:class:`BoundaryMethod`).
    """

    paper = 'Chen et al., "Boundary Unlearning", CVPR 2023, arXiv:2303.11570'
    search_space = {"lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(1, 10)}

    def __init__(
        self, *, epochs: int = 10, lr: float = 1e-3, optimizer: str = "sgd", momentum: float = 0.9,
        batch_size: int = 32,
    ) -> None:  # fmt: skip
        self.epochs = epochs
        self.lr = lr
        self.optimizer = optimizer
        self.momentum = momentum
        self.batch_size = batch_size

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        n_cls = data.num_classes
        parent, attr, head = find_head(model, n_cls)
        dev = data.device

        # 1. widen the head: N -> N + 1 outputs
        setattr(parent, attr, widen(head, generator))
        opt = make_optimizer(model.parameters(), self.optimizer, self.lr, momentum=self.momentum)
        self.history_: list[float] = []
        model.train()
        # 2. fine-tune the whole network on D_f, every label = the shadow class N
        for epoch in range(self.epochs):
            total, count = 0.0, 0
            for xb, _ in iterate(data.forget, self.batch_size, shuffle=True, generator=generator):
                logits = model(xb.to(dev))
                if logits.shape[-1] != n_cls + 1:
                    raise UnlearnkitError(
                        f"boundary_expand: widening {attr!r} did not widen the model's output "
                        f"({logits.shape[-1]} logits); the head must be the model's last layer"
                    )
                shadow = torch.full((len(xb),), n_cls, dtype=torch.long, device=dev)
                loss = F.cross_entropy(logits, shadow)
                check_finite(loss, "boundary_expand")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(xb)
                count += len(xb)
            self.history_.append(total / max(count, 1))
            if data.on_epoch:
                data.on_epoch(epoch + 1, self.epochs, self.history_[-1])

        # 3. prune the shadow neuron: back to N outputs, the original architecture
        setattr(parent, attr, prune(getattr(parent, attr)))
        return model
