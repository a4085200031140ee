"""ResNet-18 from He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), via torchvision.

Two variants, both torchvision's ``resnet18`` (the blocks are not re-implemented):

* ``resnet18``: the CIFAR variant used throughout the unlearning literature: the ImageNet stem (7x7
  stride-2 conv + 3x3 stride-2 max-pool) is replaced by a 3x3 stride-1 conv and no pooling, so a 32x32
  image reaches the last stage at 4x4 instead of 1x1. Takes any ``(C, H, W)`` image of at least 8x8.
* ``resnet18_tv``: the unmodified ImageNet model (images of at least 32x32, 224x224 intended), optionally
  with torchvision's ImageNet weights.
"""

from __future__ import annotations

import math

import torch
import torchvision
from torch import nn

from unlearnkit.models._base import register_model
from unlearnkit.models.allcnn import check_image_shape

#: Smallest image side for the CIFAR-stem ResNet (three stride-2 stages take 8x8 to 1x1).
RESNET18_MIN_SIZE = 8
#: Smallest image side for the ImageNet-stem ResNet (overall stride 32).
RESNET18_TV_MIN_SIZE = 32


def adapt_input_conv(conv: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """Return a copy of ``conv`` that takes ``in_channels`` input channels.

    With ``pretrained`` the new filters are derived from the old ones as timm does: summed over the RGB
    channels for one channel, otherwise tiled over the channels and rescaled by ``3 / in_channels`` so
    the response to a constant image is unchanged. Without it the new conv gets torchvision's
    initialisation for convs (Kaiming normal, fan-out).

    Args:
        conv: The input convolution to replace (typically 3 input channels).
        in_channels: Input channels of the new convolution.
        pretrained: Whether ``conv`` holds trained weights worth carrying over.

    Returns:
        The new convolution (``conv`` itself when it already takes ``in_channels``).
    """
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
    )  # fmt: skip
    with torch.no_grad():
        if pretrained:
            w = conv.weight
            if in_channels == 1:
                new.weight.copy_(w.sum(dim=1, keepdim=True))
            else:
                reps = math.ceil(in_channels / w.shape[1])
                new.weight.copy_(w.repeat(1, reps, 1, 1)[:, :in_channels] * (w.shape[1] / in_channels))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        else:
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            if new.bias is not None:
                nn.init.zeros_(new.bias)
    return new


@register_model("resnet18")
def resnet18(num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    """ResNet-18 with the CIFAR stem (3x3 stride-1 first conv, no max-pool), from torchvision.

    Args:
        num_classes: Number of outputs.
        in_shape: ``(C, H, W)`` with ``H, W >= 8``; ``C`` sets the input channels.

    Returns:
        A ``torchvision.models.ResNet`` whose ``conv1`` and ``maxpool`` are replaced.

    Raises:
        UnlearnkitError: For non-image ``in_shape`` or images smaller than 8x8.
    """
    c, _, _ = check_image_shape("resnet18", in_shape, RESNET18_MIN_SIZE)
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(c, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision inits convs
    model.maxpool = nn.Identity()
    return model


resnet18.example_in_shape = (3, 32, 32)  # type: ignore[attr-defined]  # CIFAR-10/100


@register_model("resnet18_tv")
def resnet18_tv(num_classes: int, in_shape: tuple[int, ...], pretrained: bool = False) -> nn.Module:
    """The unmodified torchvision ResNet-18 (ImageNet stem), optionally with ImageNet weights.

    Args:
        num_classes: Number of outputs. With ``pretrained`` the 1000-way ImageNet head is kept when
            ``num_classes == 1000`` and replaced by a freshly initialised ``Linear(512, num_classes)``
            otherwise.
        in_shape: ``(C, H, W)`` with ``H, W >= 32``. For ``C != 3`` ``conv1`` is replaced; with
            ``pretrained`` its filters are adapted from the RGB ones (see :func:`adapt_input_conv`).
        pretrained: Load ``ResNet18_Weights.DEFAULT`` through torchvision, which downloads them into the
            torch hub cache on first use (so needs internet once).

    Returns:
        A ``torchvision.models.ResNet``.

    Raises:
        UnlearnkitError: For non-image ``in_shape`` or images smaller than 32x32.
    """
    c, _, _ = check_image_shape("resnet18_tv", in_shape, RESNET18_TV_MIN_SIZE)
    if pretrained:
        model = torchvision.models.resnet18(weights=torchvision.models.ResNet18_Weights.DEFAULT)
        if num_classes != model.fc.out_features:
            model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = adapt_input_conv(model.conv1, c, pretrained=pretrained)
    return model


resnet18_tv.example_in_shape = (3, 32, 32)  # type: ignore[attr-defined]  # smallest it takes; 224x224 intended
