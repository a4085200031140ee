"""Small networks for the offline benchmarks: an MLP and a digits-sized CNN (1-D or 2-D inputs).

Convolutions have ``bias=False`` and are followed by batch norm, so scaling a conv's output channel is
the same as scaling its filter (what WF-Net's filtering relies on).
"""

from __future__ import annotations

import math

from torch import nn

from unlearnkit.errors import UnlearnkitError
from unlearnkit.models._base import register_model


@register_model("mlp")
def mlp(num_classes: int, in_shape: tuple[int, ...], hidden: int = 128, depth: int = 2) -> nn.Module:
    """Flatten, then ``depth`` hidden ReLU layers of width ``hidden``."""
    layers: list[nn.Module] = [nn.Flatten()]
    d = math.prod(in_shape)
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Two conv blocks (conv-BN-ReLU) + global average pooling + linear head.

    Works on ``(C, H, W)`` images with 2-D convolutions and on ``(C, L)`` signals with 1-D ones.
    """

    def __init__(self, num_classes: int, in_shape: tuple[int, ...], width: int = 32) -> None:
        super().__init__()
        if len(in_shape) == 3:
            conv, bn, pool = nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d
        elif len(in_shape) == 2:
            conv, bn, pool = nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d
        else:
            raise UnlearnkitError(f"small_cnn needs (C, H, W) or (C, L) inputs, got in_shape={in_shape}")
        c = in_shape[0]
        self.features = nn.Sequential(
            conv(c, width, 3, padding=1, bias=False), bn(width), nn.ReLU(),
            conv(width, 2 * width, 3, padding=1, bias=False), bn(2 * width), nn.ReLU(),
            conv(2 * width, 2 * width, 3, padding=1, stride=2, bias=False), bn(2 * width), nn.ReLU(),
            pool(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))

    def layer_sequence(self) -> list[nn.Module]:
        """The layers in forward order (the grouped ensemble trainer composes them; engine/grouped.py)."""
        return [*self.features, self.head]


@register_model("small_cnn")
def small_cnn(num_classes: int, in_shape: tuple[int, ...], width: int = 32) -> nn.Module:
    """A three-conv CNN sized for digits (8x8) and MNIST-1D (40)."""
    return SmallCNN(num_classes, in_shape, width=width)
