"""Shared pieces of the no-retain (setting 2) methods: LoRA on the attention Q/K/V, bounded forget losses,
the few-shot forget loop, and :class:`FewShotForgetMethod`, their common base (data access, budget, constraints).

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022, arXiv 2106.09685) through
``peft``: each targeted ``nn.Linear`` computes ``x W0ᵀ + b + (α/r)·x Aᵀ Bᵀ`` with ``A ∈ R^{r×d_in}`` (Kaiming
uniform) and ``B ∈ R^{d_out×r}`` (zeros), so training starts from the original model; only A and B train.
:func:`merge_lora` folds ``W' = W0 + (α/r)·B A`` back into each layer (``merge_and_unload``), leaving a
plain model of the original architecture.

Targets (:func:`find_qkv_linears`): every ``nn.Linear`` named like a query/key/value projection: the fused
timm ``qkv`` (ViT ``Attention``, Swin ``WindowAttention``), a fused ``kv``, and separate ``q``/``k``/``v``,
``q_proj``/``k_proj``/``v_proj`` or ``query``/``key``/``value`` projections. One LoRA covers a fused ``qkv``
(the spec's option of one adapter on the fused Linear).

peft is imported lazily (inside functions): ``import unlearnkit`` works without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from unlearnkit.engine import check_finite, cycle
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods._base import NON_NEGATIVE, NONE, POSITIVE, POSITIVE_INT, Interval, Method, Options, UnlearnData
from unlearnkit.methods._losses import l1_to

#: last name component of the Linear layers LoRA adapts (attention query/key/value projections)
QKV_NAMES: frozenset[str] = frozenset(
    {"qkv", "kv", "q", "k", "v", "q_proj", "k_proj", "v_proj", "query", "key", "value"}
)
LOSSES = frozenset({"log_hinge", "hinge", "inverse"})
REGULARIZERS = frozenset({"delta", "l1", "l2"})


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise UnlearnkitError("LoRA methods need peft: pip install 'unlearnkit[vit]'") from None
    return peft


# -- targets -------------------------------------------------------------------------------------------------


def find_qkv_linears(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` query/key/value projections of ``model`` (see :data:`QKV_NAMES`)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in QKV_NAMES]


def lora_targets(model: nn.Module, rank: int, method: str) -> list[str]:
    """The layers to adapt, after checking that there are some and that ``rank`` fits each; else one-line error.

    Called before any training so a model without attention blocks, or a rank that is not low, fails first.
    """
    targets = find_qkv_linears(model)
    if not targets:
        raise UnlearnkitError(
            f"method {method!r} adapts attention Q/K/V projections, but the model has none "
            f"(no nn.Linear named {', '.join(sorted(QKV_NAMES))}); use a transformer such as vit_digits"
        )
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise UnlearnkitError(f"method {method!r}: LoRA rank must be a positive integer, got {rank!r}")
    modules = dict(model.named_modules())
    for name in targets:
        lin = modules[name]
        if rank > min(lin.in_features, lin.out_features):
            raise UnlearnkitError(
                f"method {method!r}: LoRA rank {rank} is larger than layer {name} "
                f"({lin.in_features}->{lin.out_features}); it must be at most {min(lin.in_features, lin.out_features)}"
            )
    return targets


# -- attach / merge ------------------------------------------------------------------------------------------


class LoraHandle:
    """A model with LoRA adapters attached: the peft wrapper, the adapter parameters, and what merging needs.

    Attributes:
        peft_model: the ``peft`` model (call it like the original).
        targets: names of the adapted layers.
        scale: ``α / r``.
        base_params: parameter count of the original model.
    """

    def __init__(
        self, peft_model: nn.Module, targets: list[str], scale: float, base_params: int,
        requires_grad: dict[str, bool], keys: dict[str, tuple[tuple[int, ...], torch.dtype]],
    ) -> None:  # fmt: skip
        self.peft_model = peft_model
        self.targets = targets
        self.scale = scale
        self.base_params = base_params
        self._requires_grad = requires_grad
        self._keys = keys

    def adapters(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """``(A, B)`` weight pairs, one per adapted layer, in target order."""
        pairs = []
        for _, mod in self.peft_model.named_modules():
            if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
                pairs.append((mod.lora_A["default"].weight, mod.lora_B["default"].weight))
        return pairs

    def parameters(self) -> list[nn.Parameter]:
        """The trainable adapter parameters (A and B of every adapted layer)."""
        return [p for pair in self.adapters() for p in pair]

    @torch.no_grad()
    def original_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the original model (adapters switched off) on ``x``."""
        with self.peft_model.disable_adapter():
            return self.peft_model(x)

    @property
    def trainable_params(self) -> int:
        """Number of trainable adapter weights."""
        return sum(p.numel() for p in self.parameters())

    def regularizer(self, kind: str) -> torch.Tensor:
        """The adapter penalty: ``delta`` Σ‖(α/r)·B A‖_F, ``l1`` Σ(|A|+|B|) mean, ``l2`` Σ(A²+B²) mean."""
        pairs = self.adapters()
        if kind == "delta":  # ‖ΔW‖_F of each layer, ΔW = (α/r)·B A, summed over layers
            return torch.stack([(self.scale * (b @ a)).norm() for a, b in pairs]).sum()
        flat = torch.cat([t.flatten() for pair in pairs for t in pair])
        return flat.abs().mean() if kind == "l1" else flat.pow(2).mean()


def attach_lora(
    model: nn.Module, targets: list[str], *, rank: int, alpha: float, dropout: float, generator: torch.Generator
) -> LoraHandle:
    """Inject LoRA adapters into ``targets`` of ``model`` (in place) and freeze everything else.

    ``A`` is re-initialised from ``generator`` (Kaiming uniform, as LoRA does) so the run depends only on the
    seed; ``B`` starts at zero, so the adapted model computes exactly what ``model`` did.
    """
    peft = _peft()
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    keys = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    base_params = sum(p.numel() for p in model.parameters())
    cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    peft_model = peft.get_peft_model(model, cfg)
    handle = LoraHandle(peft_model, list(targets), alpha / rank, base_params, requires_grad, keys)
    with torch.no_grad():
        for a, b in handle.adapters():  # drawn on the CPU (the generator's device), then copied to a's device
            a.copy_(nn.init.kaiming_uniform_(torch.empty(a.shape), a=math.sqrt(5), generator=generator))
            b.zero_()
    if len(handle.adapters()) != len(targets):
        raise RuntimeError(f"peft adapted {len(handle.adapters())} layers, expected {len(targets)}")
    return handle


def merge_lora(handle: LoraHandle) -> nn.Module:
    """Fold every adapter into its layer (``W' = W0 + (α/r)·B A``) and return the plain original-architecture model.

    The result has no peft modules, the same state_dict keys, shapes and dtypes as the model before
    :func:`attach_lora`, and its parameters' ``requires_grad`` flags restored.
    """
    model = handle.peft_model.merge_and_unload()
    for n, p in model.named_parameters():
        p.requires_grad_(handle._requires_grad.get(n, True))
    after = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    if after != handle._keys or any("lora" in n for n, _ in model.named_modules()):
        raise RuntimeError("merging the LoRA adapters did not give back the original architecture")
    return model


def forget_mode(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode for the forget steps, except LoRA's own dropout.

    With k images the stochastic parts of the network (timm's drop-path, e.g. Swin's default 0.1, and
    dropout) only add noise, and would make the anchor's z⁰ differ from z by chance; normalisation layers keep
    their statistics. LoRA's dropout (``lora_dropout``) stays active.
    """
    model.eval()
    for name, mod in model.named_modules():
        if name.rsplit(".", 1)[-1] == "lora_dropout":
            mod.train()
    return model


# -- forget losses -------------------------------------------------------------------------------------------


def bounded_forget_loss(logits: torch.Tensor, y: torch.Tensor, kind: str, bound: float, eps: float) -> torch.Tensor:
    """A forget loss that stops growing: minimised, it raises the cross-entropy of the forget samples.

    Per sample (CE_i = −log p(y_i | x_i)), then averaged:

    * ``hinge``: max(0, B − CE_i), the GS-LoRA form ``relu(B − CE)``: a sample whose cross-entropy already
      exceeds ``bound`` contributes no gradient. Its gradient is that of CE, which vanishes with 1 − p(y):
      a confidently classified forget image (CE ≈ 0.01) is pushed a hundred times more weakly than a doubtful one.
    * ``log_hinge``: max(0, log B − log CE_i): the same bound (zero once CE_i ≥ B), with the hinge's gradient
      divided by CE_i, so confident and doubtful forget images are pushed alike.
    * ``inverse``: 1 / (CE_i + ε), as the untraining loss ``1/CE_f``; its gradient fades as CE grows.
    """
    ce_i = F.cross_entropy(logits, y, reduction="none")
    if kind == "hinge":
        return F.relu(bound - ce_i).mean()
    if kind == "log_hinge":
        return F.relu(math.log(bound) - torch.log(ce_i + 1e-12)).mean()
    return (1.0 / (ce_i + eps)).mean()


def negative_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The unbounded NegGrad loss −CE (minimising it drives the forget cross-entropy up without limit)."""
    return -F.cross_entropy(logits, y)


# -- the few-shot forget loop -------------------------------------------------------------------------------

#: augmentations of the forget images (each step draws fresh ones from the run's generator)
AUGMENTS = frozenset({"none", "noise", "shift"})
#: standard deviation of the ``noise`` augmentation, in units of the [0, 1] pixel range
NOISE_STD = 0.1


def augment_images(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Light augmentation of a batch of images in [0, 1].

    * ``noise``: add Gaussian noise of std :data:`NOISE_STD`, clipped to [0, 1];
    * ``shift``: shift each image by up to 1/8 of its side (at least 1 pixel), zero-filled;
    * ``none``: unchanged (also for non-image inputs).
    """
    if kind == "noise":
        return (x + NOISE_STD * torch.randn(x.shape, generator=generator)).clamp(0.0, 1.0)
    if kind == "shift" and x.dim() == 4:
        _, _, h, w = x.shape
        m = max(1, min(h, w) // 8)
        padded = F.pad(x, (m, m, m, m))
        offsets = torch.randint(0, 2 * m + 1, (len(x), 2), generator=generator).tolist()
        return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])
    return x


def anchor_loss(logits: torch.Tensor, logits0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over forget images and classes j ≠ y of (z_j − z⁰_j)²: the other classes' logits stay as they were.

    Raising CE(f(x_f), y_f) lowers z_y *and* raises the runner-up classes; the raise is what spills over
    to the images of those classes. Anchoring the non-forget logits of the forget images to the original
    model's leaves lowering z_y as the way to forget. Needs only the forget images and θ0.
    """
    keep = torch.ones_like(logits, dtype=torch.bool)
    keep[torch.arange(len(y)), y] = False
    return (logits - logits0)[keep].pow(2).mean()


def run_forget_steps(
    params: list[nn.Parameter],
    forget: Dataset,
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    augment: str,
    generator: torch.Generator,
    device: torch.device,
    where: str,
    on_epoch: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """``steps`` AdamW steps on ``objective(x_f, y_f)`` over ``params``; returns each step's loss.

    Each step takes the next shuffled batch of the forget images (all k of them when ``batch_size >= k``),
    augmented afresh. A NaN or infinite loss raises :class:`~unlearnkit.errors.TrainingDivergedError`.
    """
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    history: list[float] = []
    batches = cycle(forget, batch_size, generator)
    for step in range(steps):
        x, y = next(batches)
        x, y = augment_images(x, augment, generator).to(device), y.to(device)
        loss = objective(x, y)
        check_finite(loss, where)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(loss.item())
        if on_epoch is not None and (step + 1) % max(1, steps // 10) == 0:
            on_epoch(step + 1, steps, history[-1])
    return history


def trainable_report(n_trainable: int, n_total: int) -> dict[str, float]:
    """``{"trainable_params": n, "trainable_fraction": n / total}`` for the run's metrics."""
    return {"trainable_params": int(n_trainable), "trainable_fraction": n_trainable / max(n_total, 1)}


# -- the common base of the setting-2 methods ---------------------------------------------------------------

#: constraints of the few-shot loop's budget (every setting-2 method has these hyperparameters)
STEP_CONSTRAINTS: dict[str, list[Any]] = {
    "steps": [POSITIVE_INT],
    "lr": [POSITIVE],
    "batch_size": [POSITIVE_INT],
    "weight_decay": [NON_NEGATIVE],
    "augment": [Options(AUGMENTS)],
}
#: constraints of the LoRA hyperparameters (``rank`` is checked against each layer by :func:`lora_targets`)
LORA_CONSTRAINTS: dict[str, list[Any]] = {
    "rank": [POSITIVE_INT],
    "alpha": [POSITIVE, NONE],
    "dropout": [Interval(float, 0.0, 1.0, "left")],
    "regularizer": [Options(REGULARIZERS)],
    "reg_weight": [NON_NEGATIVE],
}
#: constraints of the bounded forget losses (:func:`bounded_forget_loss`)
BOUNDED_LOSS_CONSTRAINTS: dict[str, list[Any]] = {
    "loss": [Options(LOSSES)],
    "bound": [POSITIVE],
    "eps": [POSITIVE],
}


class FewShotForgetMethod(Method):
    """Base of the setting-2 methods: they see only the k forget images of one class, and share the loop.

    Subclasses set their hyperparameters in ``__init__`` (at least ``steps``, ``lr``, ``batch_size``,
    ``weight_decay`` and ``augment``, checked by :data:`STEP_CONSTRAINTS`); :meth:`_forget_steps` runs an
    objective over the forget images. The two families below differ in what trains: every parameter with an L1
    pull to θ0 (:class:`FullFineTuneForgetMethod`), or LoRA adapters merged back (:class:`LoraForgetMethod`);
    within a family, methods differ only in their forget loss.
    """

    needs = frozenset({"forget"})
    requests = frozenset({"class"})
    multi_class = False
    setting = 2
    example_model = "vit_digits"
    _parameter_constraints = dict(STEP_CONSTRAINTS)

    steps: int
    lr: float
    batch_size: int
    weight_decay: float
    augment: str

    def _forget_steps(
        self, params: list[nn.Parameter], data: UnlearnData,
        objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], generator: torch.Generator,
    ) -> None:  # fmt: skip
        """Run the budget (``steps`` AdamW steps over the forget images); the losses go to ``history_``."""
        self.history_ = run_forget_steps(
            params, data.forget, objective, steps=self.steps, lr=self.lr, weight_decay=self.weight_decay,
            batch_size=self.batch_size, augment=self.augment, generator=generator, device=data.device,
            where=self.name, on_epoch=data.on_epoch,
        )  # fmt: skip


class FullFineTuneForgetMethod(FewShotForgetMethod):
    """Every parameter trains on the forget images: L = L_forget(f_θ(x_f), y_f) + λ·‖θ − θ0‖₁ / |θ|.

    Subclasses define :meth:`_forget_loss`; ``l1_weight`` is λ.
    """

    _parameter_constraints = {**STEP_CONSTRAINTS, "l1_weight": [NON_NEGATIVE]}

    l1_weight: float

    def _forget_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
        params = [p for p in model.parameters() if p.requires_grad]
        forget_mode(model)  # eval mode: no drop-path/dropout noise, frozen normalisation statistics

        def objective(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            loss = self._forget_loss(model(x), y)
            if self.l1_weight > 0:
                loss = loss + self.l1_weight * l1_to(model, theta0)  # λ·‖θ − θ0‖₁ / |θ|
            return loss

        self._forget_steps(params, data, objective, generator)
        self.report_ = trainable_report(sum(p.numel() for p in params), sum(p.numel() for p in model.parameters()))
        return model


class LoraForgetMethod(FewShotForgetMethod):
    """LoRA adapters on the attention Q/K/V train on the forget images, then merge back:

        L = L_forget(f_{W0 + (α/r)BA}(x_f), y_f) + λ·R(A, B),   W' = W0 + (α/r)·B A.

    Subclasses define :meth:`_forget_loss` (it may use the original model's logits through ``lora``).
    """

    _parameter_constraints = {**STEP_CONSTRAINTS, **LORA_CONSTRAINTS}

    rank: int
    alpha: float | None
    dropout: float
    regularizer: str
    reg_weight: float

    def _forget_loss(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor, lora: LoraHandle) -> torch.Tensor:
        raise NotImplementedError

    def check_model(self, model: nn.Module) -> None:
        """A model without attention Q/K/V, or a rank that does not fit a layer, is refused before any work."""
        lora_targets(model, self.rank, self.name)

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        lora = self._attach_lora(model, generator)  # no attention / rank too large: refused before work
        net = forget_mode(lora.peft_model)

        def objective(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            loss = self._forget_loss(net(x), y, x, lora)
            if self.reg_weight > 0:
                loss = loss + self.reg_weight * lora.regularizer(self.regularizer)  # λ·R(A, B)
            return loss

        self._forget_steps(lora.parameters(), data, objective, generator)
        return self._merge(lora)

    def _attach_lora(self, model: nn.Module, generator: torch.Generator) -> LoraHandle:
        """LoRA of rank ``rank`` (α = ``alpha`` or r) on every attention Q/K/V of ``model``, refused before work
        when the model has no attention projection or the rank does not fit a layer."""
        targets = lora_targets(model, self.rank, self.name)
        alpha = float(self.rank if self.alpha is None else self.alpha)
        return attach_lora(model, targets, rank=self.rank, alpha=alpha, dropout=self.dropout, generator=generator)

    def _merge(self, lora: LoraHandle) -> nn.Module:
        """Record the trainable-parameter report and fold the adapters back: W' = W0 + (α/r)·B A."""
        self.report_ = trainable_report(lora.trainable_params, lora.base_params)
        return merge_lora(lora)
