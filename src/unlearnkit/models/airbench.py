"""An airbench-style CIFAR-10 network: the architecture of K. Jordan, "94% on CIFAR-10 in 3.29 Seconds on a
Single GPU" (arXiv 2404.00498, 2024), for fast reference ensembles on a GPU.

The paper's network (its §3 "Network architecture"), layer by layer, as built here:

* a 2x2 convolution without padding from the 3 colour channels to ``2·3·2·2 = 24`` channels (the paper
  initialises it by patch whitening; here it is an ordinary trainable convolution), then GELU;
* three blocks of widths ``widths = (64, 256, 256)``: 3x3 conv (padding 1) → 2x2 max-pool → batch norm →
  GELU → 3x3 conv → batch norm → GELU (all convolutions without bias);
* a global max-pool (the paper's 3x3 max-pool; the same on 32x32 inputs, whose map is 3x3 there), flatten,
  a linear layer without bias, and the output scaled by 1/9 (the paper's logit temperature).

What is **not** taken over: patch-whitening and identity initialisation, Lookahead, label smoothing, the
alternating-flip augmentation and multi-crop evaluation (they belong to airbench's training script, not to
the model; unlearnkit trains every reference model with its one :class:`~unlearnkit.engine.TrainConfig`
recipe). So the ~94% of the paper is not claimed for this model trained by ``train_model``; what it keeps
is the cost: about 1/10 of a ResNet-18's FLOPs per image, which is what makes a 512 + 512 member reference
ensemble practical on one GPU (recipe: ``benchmarks/neurips2023_cifar10_airbench.yaml``). It is a plain
layer sequence, so ``mode="grouped"`` trains many members as one wide network (engine/grouped.py).
"""

from __future__ import annotations

from torch import nn

from unlearnkit.engine.grouped import ElementwiseScale
from unlearnkit.errors import UnlearnkitError
from unlearnkit.models._base import register_model

#: smallest image side: the 2x2 conv and three 2x2 max-pools must leave at least a 1x1 map
AIRBENCH_MIN_SIZE = 16
LOGIT_SCALE = 1.0 / 9.0  # the paper's output temperature


class AirbenchNet(nn.Sequential):
    """The layers above, in forward order (an ``nn.Sequential``)."""

    def __init__(self, num_classes: int, in_shape: tuple[int, ...], widths: tuple[int, int, int]) -> None:
        if len(in_shape) != 3 or min(in_shape[1:]) < AIRBENCH_MIN_SIZE:
            raise UnlearnkitError(
                f"airbench needs (C, H, W) images of at least {AIRBENCH_MIN_SIZE}x{AIRBENCH_MIN_SIZE}, got {in_shape}"
            )
        if len(widths) != 3 or any(int(w) < 1 for w in widths):
            raise UnlearnkitError(f"airbench widths must be three positive channel counts, got {widths!r}")
        c = in_shape[0]
        stem = 2 * c * 2 * 2  # the whitening layer's width: two filters per patch dimension
        layers: list[nn.Module] = [nn.Conv2d(c, stem, kernel_size=2, padding=0, bias=False), nn.GELU()]
        c_in = stem
        for w in (int(x) for x in widths):
            layers += [
                nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(w), nn.GELU(),
                nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.GELU(),
            ]  # fmt: skip
            c_in = w
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes, bias=False),
                   ElementwiseScale(LOGIT_SCALE)]  # fmt: skip
        super().__init__(*layers)


@register_model("airbench")
def airbench(
    num_classes: int, in_shape: tuple[int, ...], widths: tuple[int, int, int] | list[int] = (64, 256, 256)
) -> nn.Module:
    """Airbench-style CIFAR network (about 2M parameters at the default widths; see the module docstring)."""
    return AirbenchNet(num_classes, in_shape, tuple(widths))  # type: ignore[arg-type]


airbench.example_in_shape = (3, 32, 32)  # type: ignore[attr-defined]  # CIFAR-10, the paper's setting
