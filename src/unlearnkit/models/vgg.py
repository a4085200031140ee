"""VGG-16 with batch norm from torchvision, adapted for small images.

Paper: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition" (ICLR
2015); batch norm as in torchvision's ``vgg16_bn``.

torchvision's ``vgg16_bn`` pools the last feature map to 7x7 and classifies it with
``25088 -> 4096 -> 4096 -> num_classes`` (about 120M parameters). For small images (side < 64, e.g.
CIFAR's 32x32, where the features end at 1x1) that head only replicates one 512-vector 49 times, so by
default this module uses the *compact* variant common in CIFAR code instead: the same 13 conv-BN-ReLU
layers and five max-pools (``features``, built by torchvision's own ``make_layers`` with VGG-16's
configuration ``"D"``, exactly as ``vgg16_bn`` builds them), then a global average pool and a
``512 -> num_classes`` linear layer (optionally with one hidden layer). Building the features directly
also avoids allocating and initialising the 120M-parameter ImageNet head only to throw it away.

For images of side >= 64 (or with ``compact=False``) the model is torchvision's ``vgg16_bn`` unchanged,
apart from the input conv when ``C != 3``.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models import vgg as tv_vgg

from unlearnkit.errors import UnlearnkitError
from unlearnkit.models._base import register_model
from unlearnkit.models.allcnn import check_image_shape
from unlearnkit.models.resnet import adapt_input_conv

#: Smallest image side (five 2x2 max-pools need at least 32 pixels).
VGG_MIN_SIZE = 32
#: Images with a side below this use the compact head by default.
VGG_COMPACT_BELOW = 64


def _init_like_torchvision(module: nn.Module) -> None:
    """Initialise convs, batch norms and linears exactly as ``torchvision.models.VGG`` does."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)


class CompactVGG(nn.Module):
    """VGG features -> global average pool -> small classifier (same attribute names as torchvision's VGG).

    Args:
        features: The convolutional trunk, ending with 512 channels.
        num_classes: Number of outputs.
        hidden: Width of an optional hidden layer (``Linear -> ReLU -> Dropout``); ``0`` for none.
        dropout: Dropout probability after the hidden layer.
    """

    def __init__(self, features: nn.Module, num_classes: int, hidden: int = 0, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        if hidden > 0:
            self.classifier = nn.Sequential(
                nn.Linear(512, hidden), nn.ReLU(True), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
            )
        else:
            self.classifier = nn.Sequential(nn.Linear(512, num_classes))
        _init_like_torchvision(self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for images ``[B, C, H, W]``."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model("vgg16_bn")
def vgg16_bn(
    num_classes: int,
    in_shape: tuple[int, ...],
    pretrained: bool = False,
    compact: bool | None = None,
    hidden: int = 0,
    dropout: float = 0.5,
) -> nn.Module:
    """VGG-16 with batch norm from torchvision; compact head for small images (see the module docstring).

    Args:
        num_classes: Number of outputs.
        in_shape: ``(C, H, W)`` with ``H, W >= 32``. For ``C != 3`` the first conv is replaced; with
            ``pretrained`` its filters are adapted from the RGB ones (see :func:`adapt_input_conv`).
        pretrained: Load ``VGG16_BN_Weights.DEFAULT`` through torchvision, which downloads them into the
            torch hub cache on first use (so needs internet once). The compact head is always fresh; the
            full head keeps the ImageNet layers and replaces the last one unless ``num_classes == 1000``.
        compact: Use the compact head; ``None`` (default) chooses it for images with a side below 64.
        hidden: Compact head only: width of a hidden layer (``0``: a single ``Linear(512, num_classes)``).
        dropout: Dropout probability in the classifier (after each hidden layer).

    Returns:
        A :class:`CompactVGG` or a ``torchvision.models.VGG``.

    Raises:
        UnlearnkitError: For non-image ``in_shape``, images smaller than 32x32 or bad options.
    """
    c, h, w = check_image_shape("vgg16_bn", in_shape, VGG_MIN_SIZE)
    if hidden < 0:
        raise UnlearnkitError(f"vgg16_bn hidden must be >= 0, got {hidden}")
    if not 0.0 <= dropout < 1.0:
        raise UnlearnkitError(f"vgg16_bn dropout must be in [0, 1), got {dropout}")
    if compact is None:
        compact = min(h, w) < VGG_COMPACT_BELOW
    if hidden and not compact:
        raise UnlearnkitError("vgg16_bn hidden applies to the compact head only (images < 64px or compact=True)")

    if pretrained:
        full = torchvision.models.vgg16_bn(weights=torchvision.models.VGG16_BN_Weights.DEFAULT, dropout=dropout)
        full.features[0] = adapt_input_conv(full.features[0], c, pretrained=True)
        if compact:
            return CompactVGG(full.features, num_classes, hidden=hidden, dropout=dropout)
        last = full.classifier[-1]
        if num_classes != last.out_features:
            full.classifier[-1] = nn.Linear(last.in_features, num_classes)
            _init_like_torchvision(full.classifier[-1])
        return full

    if compact:
        features = tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=True)
        features[0] = adapt_input_conv(features[0], c, pretrained=False)
        _init_like_torchvision(features)
        return CompactVGG(features, num_classes, hidden=hidden, dropout=dropout)
    full = torchvision.models.vgg16_bn(weights=None, num_classes=num_classes, dropout=dropout)
    full.features[0] = adapt_input_conv(full.features[0], c, pretrained=False)
    return full


vgg16_bn.example_in_shape = (3, 32, 32)  # type: ignore[attr-defined]  # CIFAR-10/100
