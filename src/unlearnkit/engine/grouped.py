"""N models of one layer-sequence architecture as one wide network: grouped convolutions, batched matmuls.

Used by :func:`~unlearnkit.engine.ensemble.train_ensemble` (``mode="grouped"``) to train an ensemble's
members in one step per batch without ``torch.vmap``: the stacked weights are the optimiser's leaves
themselves, laid out as the wide ops want, so nothing is restacked or copied per call:

* **Convolution** (``Conv1d``/``Conv2d``, ``groups=1``, zero padding): member i's input channels and output
  channels are the i-th blocks of one convolution with ``groups = M`` (weights ``[M·out, in, k…]``), so one
  kernel call convolves every member's own batch with its own filters (on the CPU, ``split_convs`` runs
  the M blocks as M plain convolutions instead: measured faster there). Activations between convolutions
  stay in this "channel" layout ``[B, M·C, …]``; member i's batch sits in channel block i.
* **Batch norm** (``BatchNorm1d``/``2d``) over ``M·C`` channels: statistics are per channel, so per member,
  exactly as M separate layers (and each member's running mean / variance are its own slice).
* **Linear** layers run on the "stacked" layout ``[M, B, d]`` as one ``baddbmm`` with weights ``[M, out, d]``;
  ``Flatten`` moves from the channel layout to the stacked one (member blocks are contiguous in both).
* Pools and parameter-free element-wise layers (ReLU, GELU, …) act per channel or per element, so they run
  unchanged on either layout.

**Which models.** A model whose forward is the composition of its layers in order: an ``nn.Sequential``
(nested ones are flattened), or a module that says so with a ``layer_sequence()`` method returning its layers
in forward order (``small_cnn``, ``airbench``). Any other layer (dropout, attention, a residual block) makes
:func:`grouped_unsupported_reason` say why, and the ensemble uses vmap or the loop.

**Speed.** What batching saves is per-call overhead and the optimiser's per-tensor passes, not
arithmetic: 32 digits MLPs train 3.2x faster than one by one on one CPU core, but a small CNN's step is
dominated by convolutions that already run at matrix-multiply speed one model at a time, so on the CPU
the grouped path is a little slower than the loop for ``small_cnn`` (0.85-0.95x; ``mode="auto"`` takes the
``fused`` path there: the members' own channels-last convolutions, see engine/ensemble.py).

**Equality with the loop.** Every member computes the same function of its own weights and its own batches
as :func:`~unlearnkit.engine.train_model`; only the kernels differ (one grouped convolution or one batched
matmul instead of M small ones), so the summation order and hence float rounding differ. In float64 the
weights after training equal the loop's to ~1e-12; in float32 they differ by float32 rounding amplified by
training (tested: ``tests/test_ensemble.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_CONV = (nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
         nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)  # fmt: skip
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Hardtanh,
                nn.Hardswish, nn.Mish, nn.Identity)  # fmt: skip


class ElementwiseScale(nn.Module):
    """``x * scale`` (a fixed number): a parameter-free layer the grouped path runs on either layout."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def layer_sequence(model: nn.Module) -> list[nn.Module] | None:
    """The layers whose composition in order is ``model``'s forward, or ``None`` if that is not declared."""
    if isinstance(model, nn.Sequential):
        top: list[nn.Module] = list(model)
    elif callable(getattr(model, "layer_sequence", None)):
        top = list(model.layer_sequence())
    else:
        return None
    out: list[nn.Module] = []
    for m in top:
        inner = layer_sequence(m) if isinstance(m, nn.Sequential) else None
        out.extend(inner if inner is not None else [m])
    return out


def _layer_reason(m: nn.Module) -> str | None:
    if isinstance(m, _CONV):
        if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
            return f"{type(m).__name__} with groups={m.groups}, padding={m.padding!r}, mode {m.padding_mode!r}"
        return None
    if isinstance(m, (*_BN, nn.Linear, ElementwiseScale, *_ELEMENTWISE, *_POOL)):
        return None
    if isinstance(m, nn.Flatten):
        return None if (m.start_dim, m.end_dim) == (1, -1) else f"Flatten({m.start_dim}, {m.end_dim})"
    return f"layer {type(m).__name__} has no grouped form"


def grouped_unsupported_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot be trained as a grouped wide network (``None`` if it can)."""
    layers = layer_sequence(model)
    if layers is None:
        return f"{type(model).__name__} is neither an nn.Sequential nor declares layer_sequence()"
    for m in layers:
        why = _layer_reason(m)
        if why is not None:
            return why
    own = {id(p) for m in layers for p in m.parameters()}
    if any(id(p) not in own for p in model.parameters()):
        return "the model has parameters outside its layer sequence"
    return None


def has_convolution(model: nn.Module, dims: int | None = None) -> bool:
    """Whether the model holds a convolution (``dims=1`` / ``2``: a ``Conv1d`` / ``Conv2d``); the fixed rule of
    ``mode="auto"`` looks at this."""
    kinds = {1: (nn.Conv1d,), 2: (nn.Conv2d,)}.get(dims, _CONV) if dims is not None else _CONV
    return any(isinstance(m, kinds) for m in model.modules())


def _to_channels(h: torch.Tensor, stacked: bool) -> torch.Tensor:
    """[M, B, C, …] → [B, M·C, …] (member i in channel block i); channel-layout input is returned as is."""
    if not stacked:
        return h
    m, b = h.shape[:2]
    return h.transpose(0, 1).reshape(b, m * h.shape[2], *h.shape[3:])


class GroupedMembers:
    """M models of one supported architecture as wide leaves and one forward pass.

    Args:
        members: models of the same architecture (train mode); their weights and buffers are copied.
        split_convs: run each convolution as M plain convolutions of the members' channel blocks instead of
            one grouped convolution (same result up to float rounding). On the CPU the plain ones measured
            ~10% faster for ``small_cnn`` (oneDNN's grouped kernel); on a GPU one grouped call is the form
            cuDNN runs best (not measured here).

    Attributes:
        params: the wide leaf tensors (optimise these: element-wise optimisers act per member).
    """

    def __init__(self, members: Sequence[nn.Module], *, split_convs: bool = False) -> None:
        self.m = len(members)
        self.split_convs = split_convs
        seqs = [layer_sequence(x) for x in members]
        self.layers: list[nn.Module] = seqs[0]  # type: ignore[assignment]
        self.state: list[dict[str, Any]] = []
        self.params: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            group = [s[i] for s in seqs]  # type: ignore[index]
            st: dict[str, Any] = {}
            for name in ("weight", "bias"):
                p = getattr(layer, name, None)
                if isinstance(p, torch.Tensor):
                    st[name] = torch.stack([getattr(g, name).detach() for g in group]).clone().requires_grad_()
                    self.params.append(st[name])
            if isinstance(layer, _BN) and layer.track_running_stats:
                st["running_mean"] = torch.cat([g.running_mean for g in group]).clone()
                st["running_var"] = torch.cat([g.running_var for g in group]).clone()
                st["tracked"] = int(layer.num_batches_tracked)
            self.state.append(st)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[M, B, K]`` of every member on its own batch ``x`` ``[M, B, …]`` (train mode)."""
        m = self.m
        h, stacked = x, True  # stacked: [M, B, ...]; else channel layout [B, M*C, ...]
        for layer, st in zip(self.layers, self.state, strict=True):
            if isinstance(layer, _CONV):
                h = _to_channels(h, stacked)
                w = st["weight"]
                conv = F.conv2d if isinstance(layer, nn.Conv2d) else F.conv1d
                b = st["bias"].reshape(-1) if "bias" in st else None
                if self.split_convs:  # M plain convolutions of channel blocks (the CPU's fastest)
                    xs, bs = h.chunk(m, dim=1), (st["bias"] if "bias" in st else [None] * m)
                    h = torch.cat([conv(xs[i], w[i], bs[i], layer.stride, layer.padding, layer.dilation)
                                   for i in range(m)], dim=1)  # fmt: skip
                else:  # one grouped convolution
                    h = conv(h, w.reshape(m * w.shape[1], *w.shape[2:]), b, layer.stride, layer.padding,
                             layer.dilation, m)  # fmt: skip
                stacked = False
            elif isinstance(layer, _BN):
                h = _to_channels(h, stacked)
                stacked = False
                factor = layer.momentum
                if "running_mean" in st:
                    st["tracked"] += 1
                    if factor is None:  # cumulative moving average
                        factor = 1.0 / st["tracked"]
                w = st["weight"].reshape(-1) if "weight" in st else None
                b = st["bias"].reshape(-1) if "bias" in st else None
                h = F.batch_norm(h, st.get("running_mean"), st.get("running_var"), w, b, True, factor or 0.0,
                                 layer.eps)  # fmt: skip
            elif isinstance(layer, _POOL):
                h = layer(_to_channels(h, stacked))
                stacked = False
            elif isinstance(layer, nn.Flatten):
                if stacked:
                    h = h.flatten(2)
                else:
                    h = h.reshape(h.shape[0], m, -1).transpose(0, 1)
                    stacked = True
            elif isinstance(layer, nn.Linear):
                if not stacked:
                    h = h.reshape(h.shape[0], m, -1).transpose(0, 1)
                    stacked = True
                shape = h.shape
                flat = h.reshape(m, -1, shape[-1])
                wt = st["weight"].transpose(1, 2)
                out = torch.baddbmm(st["bias"][:, None, :], flat, wt) if "bias" in st else torch.bmm(flat, wt)
                h = out.reshape(*shape[:-1], out.shape[-1])
            else:  # parameter-free, element-wise
                h = layer(h)
        if not stacked:
            h = h.reshape(h.shape[0], m, -1).transpose(0, 1)
        return h

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[M]`` mean cross-entropy of each member on its own batch (``x`` [M, B, …], ``y`` [M, B])."""
        logits = self.forward(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none").view(
            self.m, -1).mean(1)  # fmt: skip

    @torch.no_grad()
    def write_back(self, members: Sequence[nn.Module]) -> None:
        """Copy member i's slice of every wide tensor into ``members[i]``."""
        seqs = [layer_sequence(x) for x in members]
        for li, st in enumerate(self.state):
            for i, seq in enumerate(seqs):
                layer = seq[li]  # type: ignore[index]
                for name in ("weight", "bias"):
                    if name in st:
                        getattr(layer, name).copy_(st[name][i])
                if "running_mean" in st:
                    c = layer.num_features
                    layer.running_mean.copy_(st["running_mean"][i * c : (i + 1) * c])
                    layer.running_var.copy_(st["running_var"][i * c : (i + 1) * c])
                    layer.num_batches_tracked.fill_(st["tracked"])
