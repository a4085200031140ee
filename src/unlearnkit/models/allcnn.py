"""All-CNN-C from Springenberg et al., "Striving for Simplicity: The All Convolutional Net" (ICLR 2015 workshop).

The layout follows the All-CNN used by Boundary Unlearning (Chen et al., CVPR 2023), whose code takes it from
Selective Forgetting (Golatkar et al., CVPR 2020): eight conv-BN-ReLU blocks (96 then 192 filters, two
stride-2 convs instead of max-pooling), optional dropout after each downsampling, global average pooling
and one linear layer (in place of the paper's final 1x1 conv to the classes followed by pooling). Module
names follow that code (``features.<i>.<j>``, ``classifier.0``), so state dicts saved by it load here.

Differences from that code: the final ``AvgPool2d(8)`` is a global average pool, so any ``(C, H, W)``
image of at least 8x8 works (for 32x32 inputs the two are the same).

Every convolution has ``bias=False`` and is followed by batch norm, so scaling a conv's output channel is
the same as scaling its filter (what WF-Net's filtering relies on).
"""

from __future__ import annotations

import torch
from torch import nn

from unlearnkit.errors import UnlearnkitError
from unlearnkit.models._base import register_model

#: Smallest image side All-CNN accepts (two stride-2 convs leave a 2x2 map to pool).
ALLCNN_MIN_SIZE = 8


def check_image_shape(model: str, in_shape: tuple[int, ...], min_size: int) -> tuple[int, int, int]:
    """Check that ``in_shape`` is a ``(C, H, W)`` image of at least ``min_size`` x ``min_size``.

    Args:
        model: Model name, used in the error message.
        in_shape: Input shape without the batch dimension.
        min_size: Smallest allowed height and width.

    Returns:
        ``(C, H, W)`` as ints.

    Raises:
        UnlearnkitError: If ``in_shape`` is not 3-D or the image is too small.
    """
    if len(in_shape) != 3:
        raise UnlearnkitError(f"{model} is a 2-D CNN and needs (C, H, W) image inputs, got in_shape={tuple(in_shape)}")
    c, h, w = (int(s) for s in in_shape)
    if min(h, w) < min_size:
        raise UnlearnkitError(
            f"{model} needs images of at least {min_size}x{min_size}, got {h}x{w} (in_shape={tuple(in_shape)})"
        )
    return c, h, w


class ConvBNReLU(nn.Sequential):
    """``Conv2d(bias=False)`` -> ``BatchNorm2d`` -> ``ReLU``, with "same" padding by default."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int | None = None
    ) -> None:
        if padding is None:
            padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class AllCNN(nn.Module):
    """All-CNN-C with batch norm and a global-average-pool head.

    Args:
        num_classes: Number of outputs.
        in_channels: Channels of the input images.
        filters: Width multiplier; the two stages have ``int(96 * filters)`` and ``int(192 * filters)``
            filters (SCRUB's ``--filters``, Selective Forgetting's ``filters_percentage``).
        dropout: Dropout probability after each stride-2 block; ``0`` disables it.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, filters: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        n1, n2 = int(96 * filters), int(192 * filters)
        if n1 < 1:
            raise UnlearnkitError(f"allcnn filters must be >= {1 / 96:.4f} (at least one filter), got {filters}")
        if not 0.0 <= dropout < 1.0:
            raise UnlearnkitError(f"allcnn dropout must be in [0, 1), got {dropout}")

        def drop() -> nn.Module:
            return nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        self.features = nn.Sequential(
            ConvBNReLU(in_channels, n1),
            ConvBNReLU(n1, n1),
            ConvBNReLU(n1, n2, stride=2),
            drop(),
            ConvBNReLU(n2, n2),
            ConvBNReLU(n2, n2),
            ConvBNReLU(n2, n2, stride=2),
            drop(),
            ConvBNReLU(n2, n2),
            ConvBNReLU(n2, n2, kernel_size=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Linear(n2, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for images ``[B, C, H, W]``."""
        return self.classifier(self.features(x))


@register_model("allcnn")
def allcnn(num_classes: int, in_shape: tuple[int, ...], filters: float = 1.0, dropout: float | bool = 0.0) -> nn.Module:
    """All-CNN-C (Springenberg et al. 2015) as in Boundary Unlearning, for ``(C, H, W)`` images >= 8x8.

    Args:
        num_classes: Number of outputs.
        in_shape: ``(C, H, W)``; ``C`` sets the input channels.
        filters: Width multiplier (1.0 = 96/192 filters).
        dropout: Dropout probability after each downsampling block; ``True`` means 0.5 (the
            ``dropout=True`` of the reference code), ``False``/``0`` disables it.

    Returns:
        An :class:`AllCNN`.

    Raises:
        UnlearnkitError: For non-image ``in_shape``, images smaller than 8x8 or bad options.
    """
    c, _, _ = check_image_shape("allcnn", in_shape, ALLCNN_MIN_SIZE)
    p = (0.5 if dropout else 0.0) if isinstance(dropout, bool) else float(dropout)
    return AllCNN(num_classes, in_channels=c, filters=float(filters), dropout=p)


allcnn.example_in_shape = (3, 32, 32)  # type: ignore[attr-defined]  # CIFAR-10, the paper's setting
