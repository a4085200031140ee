"""Vision transformers for the no-retain setting (setting 2 of the talk), built with timm.

* ``vit_tiny_patch16`` / ``vit_small_patch16``: ViT-T/16 and ViT-S/16 from Dosovitskiy et al., "An Image is
  Worth 16x16 Words: Transformers for Image Recognition at Scale" (ICLR 2021, arXiv 2010.11929).
* ``swin_small``: Swin-S from Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted
  Windows" (ICCV 2021, arXiv 2103.14030).
* ``vit_digits``: a tiny timm ``VisionTransformer`` (1x8x8 digits, patch 2, width 64, depth 4, 4 heads) that
  trains in about a minute on one CPU core, for the offline benchmark. Its patch embedding is preceded by
  one 3x3 convolution (a "convolutional stem", Xiao et al., "Early Convolutions Help Transformers See
  Better", NeurIPS 2021, arXiv 2106.14881): without it the ViT overfits the 1,200 training digits at about
  0.90 test accuracy; with it, about 0.96. The attention blocks are timm's own (fused ``qkv``).

The three named models are created by timm name (``vit_tiny_patch16_224``, ``vit_small_patch16_224``,
``swin_small_patch4_window7_224``) with ``pretrained`` left to the user (default False; True downloads
timm's weights on the user's machine, never in tests). They are wrapped in :class:`TimmClassifier`, which can
resize inputs to the size the transformer runs at (``img_size``, e.g. 224 for CIFAR's 32x32 images with
pretrained weights) and normalise them with the weights' mean/std (``normalize``); the timm model is its
``net`` attribute, so state_dict keys are ``net.<timm key>``.

timm is imported lazily (inside the builders): ``import unlearnkit`` works without it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.errors import UnlearnkitError
from unlearnkit.models._base import register_model

#: registry name -> (timm model name, patch size: the smallest image side the model takes)
TIMM_NAMES: dict[str, tuple[str, int]] = {
    "vit_tiny_patch16": ("vit_tiny_patch16_224", 16),
    "vit_small_patch16": ("vit_small_patch16_224", 16),
    "swin_small": ("swin_small_patch4_window7_224", 4),
}


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise UnlearnkitError("vision-transformer models need timm: pip install 'unlearnkit[vit]'") from None
    return timm


def _image_shape(model: str, in_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise UnlearnkitError(
            f"{model} is a vision transformer and needs (C, H, W) image inputs, got in_shape={tuple(in_shape)}"
        )
    c, h, w = (int(s) for s in in_shape)
    return c, h, w


def _size_pair(model: str, img_size: Any, default: tuple[int, int]) -> tuple[int, int]:
    if img_size is None:
        return default
    if isinstance(img_size, int) and not isinstance(img_size, bool):
        return (img_size, img_size)
    if isinstance(img_size, list | tuple) and len(img_size) == 2 and all(isinstance(s, int) for s in img_size):
        return (int(img_size[0]), int(img_size[1]))
    raise UnlearnkitError(f"{model}: img_size must be an int or (height, width), got {img_size!r}")


class TimmClassifier(nn.Module):
    """A timm classifier behind optional input resizing and normalisation.

    Args:
        net: the timm model (``num_classes`` outputs).
        img_size: ``(H, W)`` the transformer runs at; inputs of another size are resized (bilinear).
        mean, std: per-channel normalisation applied after resizing, or ``None`` for none.
    """

    def __init__(
        self, net: nn.Module, img_size: tuple[int, int], mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.net = net
        self.img_size = tuple(img_size)
        self.normalize = mean is not None
        if mean is not None and std is not None:
            # non-persistent: the state_dict holds exactly the timm model's tensors (prefixed ``net.``)
            self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            x = F.interpolate(x, size=self.img_size, mode="bilinear", align_corners=False)
        if self.normalize:
            x = (x - self.mean) / self.std
        return self.net(x)


def _create_timm(
    name: str, num_classes: int, in_shape: tuple[int, ...], *, pretrained: bool, img_size: Any,
    normalize: bool, **kwargs: Any,
) -> nn.Module:  # fmt: skip
    """Build the registered timm backbone ``name`` (see :data:`TIMM_NAMES`) wrapped in a TimmClassifier."""
    timm_name, patch = TIMM_NAMES[name]
    c, h, w = _image_shape(name, in_shape)
    size = _size_pair(name, img_size, (h, w))
    if min(size) < patch:
        raise UnlearnkitError(
            f"{name} cuts images into {patch}x{patch} patches and needs images of at least {patch}x{patch}, "
            f"got {size[0]}x{size[1]}" + ("" if img_size is not None else " (pass img_size to resize inputs)")
        )
    if not isinstance(pretrained, bool) or not isinstance(normalize, bool):
        raise UnlearnkitError(f"{name}: pretrained and normalize must be booleans")
    timm = _timm()
    try:
        net = timm.create_model(
            timm_name, pretrained=pretrained, num_classes=num_classes, img_size=size, in_chans=c, **kwargs
        )
    except TypeError as e:  # an option the timm model does not take
        raise UnlearnkitError(f"{name}: {' '.join(str(e).split())}") from None
    except (RuntimeError, ValueError, AssertionError) as e:
        raise UnlearnkitError(f"{name} cannot be built for in_shape={in_shape}, img_size={size}: {e}") from None
    mean = std = None
    if normalize:
        cfg = getattr(net, "pretrained_cfg", None) or {}
        mean, std = tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        if len(mean) != c:  # grey images with RGB statistics: one value per channel, as timm adapts the stem
            mean, std = (sum(mean) / len(mean),) * c, (sum(std) / len(std),) * c
    return TimmClassifier(net, size, mean, std)


@register_model("vit_tiny_patch16")
def vit_tiny_patch16(
    num_classes: int, in_shape: tuple[int, ...], pretrained: bool = False, img_size: Any = None,
    normalize: bool = False, **kwargs: Any,
) -> nn.Module:  # fmt: skip
    """ViT-T/16 (timm ``vit_tiny_patch16_224``; width 192, depth 12, 3 heads, 5.7M parameters).

    Args:
        num_classes: number of outputs.
        in_shape: ``(C, H, W)``; ``C`` sets the input channels.
        pretrained: load timm's ImageNet weights (downloads on first use; the head is replaced).
        img_size: the size the transformer runs at (int or ``(H, W)``); default the input's own size.
            Inputs are resized to it.
        normalize: normalise inputs with the pretrained weights' mean/std.
        **kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).
    """
    return _create_timm("vit_tiny_patch16", num_classes, in_shape, pretrained=pretrained, img_size=img_size,
                        normalize=normalize, **kwargs)  # fmt: skip


@register_model("vit_small_patch16")
def vit_small_patch16(
    num_classes: int, in_shape: tuple[int, ...], pretrained: bool = False, img_size: Any = None,
    normalize: bool = False, **kwargs: Any,
) -> nn.Module:  # fmt: skip
    """ViT-S/16 (timm ``vit_small_patch16_224``; width 384, depth 12, 6 heads, 22M parameters).

    Arguments as for :func:`vit_tiny_patch16`.
    """
    return _create_timm("vit_small_patch16", num_classes, in_shape, pretrained=pretrained, img_size=img_size,
                        normalize=normalize, **kwargs)  # fmt: skip


@register_model("swin_small")
def swin_small(
    num_classes: int, in_shape: tuple[int, ...], pretrained: bool = False, img_size: Any = None,
    normalize: bool = False, **kwargs: Any,
) -> nn.Module:  # fmt: skip
    """Swin-S (timm ``swin_small_patch4_window7_224``; patch 4, window 7, depths 2-2-18-2, 50M parameters).

    timm clips the 7x7 window to the feature map when a stage is smaller than it, so any image of at least
    4x4 works; pretrained weights are meant for 224x224 (``img_size=224``). Arguments as for
    :func:`vit_tiny_patch16`.
    """
    return _create_timm("swin_small", num_classes, in_shape, pretrained=pretrained, img_size=img_size,
                        normalize=normalize, **kwargs)  # fmt: skip


for _fn in (vit_tiny_patch16, vit_small_patch16, swin_small):
    _fn.example_in_shape = (3, 32, 32)  # type: ignore[attr-defined]  # CIFAR-sized, random weights in tests


@register_model("vit_digits")
def vit_digits(
    num_classes: int, in_shape: tuple[int, ...], patch_size: int = 2, embed_dim: int = 64, depth: int = 4,
    num_heads: int = 4, mlp_ratio: float = 4.0, stem_channels: int = 32,
) -> nn.Module:  # fmt: skip
    """A tiny timm ``VisionTransformer`` for 8x8 digits (about 200k parameters; class token, fused ``qkv``).

    Trained with ``{epochs: 20, lr: 1e-3, optimizer: adamw, weight_decay: 0.05, batch_size: 32}`` it reaches
    0.951-0.971 test accuracy on digits (seeds 0-2) in about a minute on one CPU core. It uses timm's "jax"
    initialisation: with the default one a ViT this small sits on a loss plateau for several epochs.

    Args:
        num_classes: number of outputs.
        in_shape: ``(C, H, W)`` with ``H`` and ``W`` divisible by ``patch_size``.
        patch_size, embed_dim, depth, num_heads, mlp_ratio: the transformer's shape.
        stem_channels: channels of the 3x3 conv before the patch embedding; 0 for a plain ViT.
    """
    c, h, w = _image_shape("vit_digits", in_shape)
    if patch_size < 1 or h % patch_size or w % patch_size:
        raise UnlearnkitError(f"vit_digits needs image sides divisible by patch_size={patch_size}, got {h}x{w}")
    if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
        raise UnlearnkitError(f"vit_digits: embed_dim={embed_dim} must be a positive multiple of num_heads={num_heads}")
    if depth < 1 or mlp_ratio <= 0 or stem_channels < 0:
        raise UnlearnkitError("vit_digits: depth must be >= 1, mlp_ratio > 0 and stem_channels >= 0")
    _timm()
    from timm.layers import lecun_normal_
    from timm.models.vision_transformer import VisionTransformer

    net = VisionTransformer(
        img_size=(h, w), patch_size=patch_size, in_chans=c, num_classes=num_classes, embed_dim=embed_dim,
        depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, weight_init="jax",
    )  # fmt: skip
    if stem_channels:  # conv stem: 3x3 conv + GELU, then the patchifying conv (timm calls patch_embed.proj(x))
        stem = nn.Sequential(
            nn.Conv2d(c, stem_channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(stem_channels, embed_dim, patch_size, stride=patch_size),
        )  # fmt: skip
        for conv in (stem[0], stem[2]):  # the "jax" initialisation timm gives convolutions
            lecun_normal_(conv.weight)
            nn.init.zeros_(conv.bias)
        net.patch_embed.proj = stem
    return net
