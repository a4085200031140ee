"""The WF-Net model: a frozen classifier whose filters are scaled by class-conditioned rows of α.

Poppi, Sarto, Cornia, Baraldi, Cucchiara, "Multi-Class Unlearning for Image Classification via Weight
Filtering", IEEE Intelligent Systems 2024 (arXiv 2304.02049). See :mod:`unlearnkit.methods.wfnet` for the
training; this module holds the parametrisation (spec ``methods.md`` §1.2):

* every filtered layer ``l`` with ``K_l`` output units (conv filters, or the output features of an
  attention q/k/v projection) gets ``α_l ∈ [0, 1]^{N_c × K_l}``, initialised to ones;
* unlearning class ``c`` scales unit ``k``'s weights by ``α_l[c, k]``: ``W̃_l[k] = α_l[c, k] · W_l[k]``.
  We apply it to the layer's *output* through a forward hook, ``y' = α·(y − b) + b``, which is exactly the
  output of the layer with scaled weights (the bias, if any, is not scaled), and lets every sample of a
  batch use its own row (training) without touching the frozen weights;
* a set ``S`` of classes is unlearned with the elementwise product ``∏_{c∈S} α_l[c]`` [CHOICE];
* no request ("bypass") leaves the original model's outputs bit-for-bit unchanged.

Which layers are filtered (:func:`find_filter_layers`): conv filters for CNNs, the fused ``qkv`` projection
(timm) or separate q/k/v projections for ViTs; the classifier head (the last conv/linear layer) never.
For a network with neither (an MLP) the hidden linear units are filtered instead [CHOICE, not in the paper].
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from unlearnkit.errors import UnlearnkitError

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: last name component of an attention projection: fused timm ``qkv``, or separate q/k/v (timm, HF, ...)
_QKV_NAMES = ("qkv", "q", "k", "v", "query", "key", "value", "q_proj", "k_proj", "v_proj")
#: what ``layers=`` may ask for
LAYER_KINDS = ("auto", "conv", "attention", "linear")


def _head_name(model: nn.Module) -> str | None:
    """The classifier head: the last conv/linear layer in registration order."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, *_CONV))]
    return names[-1] if names else None


def find_filter_layers(model: nn.Module, kind: str = "auto") -> tuple[list[str], str]:
    """Names of the layers WF-Net filters in ``model``, and the kind chosen.

    Args:
        model: the classifier.
        kind: ``conv`` (every convolution), ``attention`` (linear q/k/v projections of self-attention,
            fused or separate), ``linear`` (every hidden linear layer), or ``auto``: attention projections if
            the model has any (a ViT; its patch-embedding conv is then left alone), else convolutions, else
            hidden linear layers. The head is never filtered.

    Raises:
        UnlearnkitError: unknown ``kind``, or nothing of that kind to filter.
    """
    if kind not in LAYER_KINDS:
        raise UnlearnkitError(f"wfnet: layers must be one of {', '.join(LAYER_KINDS)}, got {kind!r}")
    head = _head_name(model)
    found: dict[str, list[str]] = {"conv": [], "attention": [], "linear": []}
    for name, m in model.named_modules():
        if name == head:
            continue
        if isinstance(m, _CONV):
            found["conv"].append(name)
        elif isinstance(m, nn.Linear):
            found["linear"].append(name)
            if name.rsplit(".", 1)[-1] in _QKV_NAMES:
                found["attention"].append(name)
    if kind == "auto":
        kind = next((k for k in ("attention", "conv", "linear") if found[k]), "")
        if not kind:
            raise UnlearnkitError(
                f"wfnet: {type(model).__name__} has nothing to filter: no convolution, attention projection "
                "or hidden linear layer besides its head"
            )
    if not found[kind]:
        if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
            hint = " (nn.MultiheadAttention's fused in_proj cannot be filtered; use a timm-style ViT)"
        else:
            hint = ""
        raise UnlearnkitError(f"wfnet: {type(model).__name__} has no {kind} layer to filter besides its head{hint}")
    return found[kind], kind


def _param_key(layer: str) -> str:
    return "l_" + layer.replace(".", "__")


class _Gate:
    """Forward hook of one filtered layer: scales its output units by the current gate, if any.

    A plain object (not a closure) so that ``copy.deepcopy`` of the wrapper re-points it at the copy.
    """

    def __init__(self, owner: WFNetModel, layer: str) -> None:
        self.owner = owner
        self.layer = layer

    def __call__(self, module: nn.Module, inputs: object, out: torch.Tensor) -> torch.Tensor | None:
        gate = self.owner._gates.get(self.layer) if self.owner._gates is not None else None
        if gate is None:
            return None  # bypass: the output is left untouched
        units_dim = 1 if isinstance(module, _CONV) else out.ndim - 1  # conv: channels; linear: features
        shape = [1] * out.ndim
        shape[0], shape[units_dim] = gate.shape[0], gate.shape[1]
        g = gate.to(out.dtype).reshape(shape)  # (B or 1, K) -> broadcastable onto out
        bias = getattr(module, "bias", None)
        if bias is None:
            return out * g
        b_shape = [1] * out.ndim
        b_shape[units_dim] = -1
        b = bias.to(out.dtype).reshape(b_shape)
        return (out - b) * g + b  # == output of the layer with weights scaled by g (bias unscaled)


class WFNetModel(nn.Module):
    """A frozen classifier plus α matrices; ``forward(x)`` applies the stored unlearning request.

    Args:
        model: the original classifier (used as is, not copied; its parameters are frozen).
        layers: names (in ``model.named_modules()``) of the layers to filter.
        num_classes: ``N_c``, the number of rows of every α.

    The state dict holds the original weights (``model.*``), every α (``alpha.*``) and the stored request
    (``switched_off``, one flag per class), so a saved WF-Net keeps what it was asked to forget.

    Example:
        >>> wf = WFNetModel(net, ["features.0"], 10)    # doctest: +SKIP
        >>> wf.set_unlearn([3])(x).argmax(1)            # class 3 switched off
        >>> wf.set_unlearn(None)(x)                     # the original model's outputs
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise UnlearnkitError(f"wfnet needs at least 2 classes, got {num_classes}")
        modules = dict(model.named_modules())
        self.model = model
        self.layer_names: list[str] = list(layers)
        self.num_classes = int(num_classes)
        self.alpha = nn.ParameterDict()
        for name in self.layer_names:
            m = modules.get(name)
            if not isinstance(m, (nn.Linear, *_CONV)):
                raise UnlearnkitError(f"wfnet: {name!r} is not a convolution or linear layer of the model")
            units = m.out_channels if isinstance(m, _CONV) else m.out_features
            key = _param_key(name)
            if key in self.alpha:
                raise UnlearnkitError(f"wfnet: two layers map to the same α name {key!r}")
            self.alpha[key] = nn.Parameter(torch.ones(self.num_classes, units))  # α_l ∈ R^{N_c × K_l}, init 1
        self.register_buffer("switched_off", torch.zeros(self.num_classes, dtype=torch.bool))
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._gates: dict[str, torch.Tensor] | None = None
        for name in self.layer_names:
            modules[name].register_forward_hook(_Gate(self, name))

    # -- the request ----------------------------------------------------------------------------------
    def set_unlearn(self, classes: Sequence[int] | None) -> WFNetModel:
        """Switch off ``classes`` (``None`` or empty: bypass, the original model); returns ``self``."""
        self.switched_off.zero_()
        for c in self._check_classes(classes or ()):
            self.switched_off[c] = True
        return self

    @property
    def unlearned_classes(self) -> tuple[int, ...]:
        """The classes currently switched off (empty: bypass)."""
        return tuple(int(c) for c in torch.nonzero(self.switched_off).flatten().tolist())

    def _check_classes(self, classes: Sequence[int]) -> list[int]:
        out = [int(c) for c in classes]
        bad = [c for c in out if not 0 <= c < self.num_classes]
        if bad:
            raise UnlearnkitError(f"wfnet: class {bad[0]} is not in 0..{self.num_classes - 1}")
        if len(set(out)) != len(out):
            raise UnlearnkitError(f"wfnet: a class is listed twice in {out}")
        return out

    # -- α and gates ------------------------------------------------------------------------------------
    def alpha_of(self, layer: str) -> torch.Tensor:
        """α of ``layer``, shape ``(N_c, K_l)``."""
        return self.alpha[_param_key(layer)]

    def combined_rows(self, classes: Sequence[int]) -> dict[str, torch.Tensor]:
        """Per layer, the gate ``∏_{c∈S} α_l[c]`` of shape ``(K_l,)`` for the set ``S = classes``."""
        idx = torch.as_tensor(self._check_classes(classes), dtype=torch.long, device=self.switched_off.device)
        return {n: self.alpha_of(n)[idx].prod(dim=0) for n in self.layer_names}

    def importance(self, classes: Sequence[int]) -> dict[str, torch.Tensor]:
        """Filter importance for ``classes`` (spec §1.5): ``s_l = 1 − ∏_{c∈S} α_l[c]``, per layer ``(K_l,)``."""
        with torch.no_grad():
            return {n: (1.0 - g).detach().clone() for n, g in self.combined_rows(classes).items()}

    def clamp_(self) -> None:
        """Project every α back onto [0, 1] (done after each optimiser step)."""
        with torch.no_grad():
            for a in self.alpha.values():
                a.clamp_(0.0, 1.0)

    @contextlib.contextmanager
    def _gated(self, gates: dict[str, torch.Tensor] | None) -> Iterator[None]:
        self._gates = gates
        try:
            yield
        finally:
            self._gates = None

    # -- forward ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``x``.

        Args:
            x: a batch of inputs.
            rows: optional ``(B,)`` class per sample; sample ``i`` is filtered with ``α[rows[i]]`` (training).
                Without it the stored request (:meth:`set_unlearn`) applies to the whole batch.
        """
        if rows is not None:
            rows = rows.to(self.switched_off.device, torch.long)
            gates = {n: self.alpha_of(n)[rows] for n in self.layer_names}  # (B, K_l) each
        elif self.switched_off.any():
            gates = {n: g.unsqueeze(0) for n, g in self.combined_rows(self.unlearned_classes).items()}
        else:
            gates = None
        with self._gated(gates):
            return self.model(x)

    def forward_with_gates(self, x: torch.Tensor, gates: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits with explicit per-layer unit gates ``(K_l,)`` (e.g. 0/1 masks) instead of α.

        Layers missing from ``gates`` are left unfiltered. Used by the deletion/insertion analysis.
        """
        unknown = set(gates) - set(self.layer_names)
        if unknown:
            raise UnlearnkitError(f"wfnet: no filtered layer named {sorted(unknown)[0]!r}")
        with self._gated({n: g.reshape(1, -1) for n, g in gates.items()}):
            return self.model(x)

    def units(self) -> dict[str, int]:
        """Number of output units (filters) of every filtered layer."""
        return {n: self.alpha_of(n).shape[1] for n in self.layer_names}

    def filter_analysis(
        self, forget: Dataset, retain: Dataset, classes: Sequence[int], *, fractions: Sequence[float], seed: int,
        max_samples: int, device: torch.device | str,
    ) -> dict[str, Any]:  # fmt: skip
        """The deletion/insertion analysis of this model's filters for ``classes`` (JSON-able).

        What the ``wfnet_*`` metrics read (they find it by this name, so metrics need not import methods);
        see :func:`~unlearnkit.methods.wfnet_analysis.deletion_insertion` for the arguments.
        """
        from unlearnkit.methods.wfnet_analysis import deletion_insertion  # it imports this module

        res = deletion_insertion(self, forget, retain, classes, fractions=fractions, seed=seed,
                                 max_samples=max_samples, device=device)  # fmt: skip
        return res.to_json()

    @property
    def alpha_checksum(self) -> float:
        """Sum of every α (a cheap fingerprint of the learned importances)."""
        return float(sum(a.detach().double().sum() for a in self.alpha.values()))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, filtered_layers={len(self.layer_names)}"
