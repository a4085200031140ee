"""Relearning attack on a CLIP (setting 3): does the redirected concept come back after a few steps?

Setting 3 has no retrained model, so the floor of the classifier attacks (:mod:`unlearnkit.protocols.relearn`)
does not exist; the attacked model is compared with itself before the attack and with the original CLIP
under the same attack. The attacker holds ``k`` unsafe ``(u, g)`` pairs of the training quadruplets and
fine-tunes a deep copy of the model the user receives (every floating-point parameter, frozen ones
included) for ``steps`` Adam steps with the model's own training loss: CLIP's symmetric InfoNCE over the k
pairs, ℓ = ½ [CE(s·U Gᵀ, I) + CE(s·G Uᵀ, I)] on normalised features with the model's logit scale s (clamped
at 100), gradient norm clipped at 1 (:func:`unlearnkit.concept.pretrain.clip_loss`, the pretraining
objective; Radford et al., arXiv 2103.00020). This is the relearning attack of Hu et al. (ICLR 2025) and
Goel et al. (arXiv 2201.06640) with the contrastive loss in place of cross-entropy.

After the attack the test quadruplets are scored again (:func:`~unlearnkit.concept.retrieval.concept_retrieval`):
the registered metrics ``relearn_unsafe_rate_tstar`` / ``relearn_unsafe_rate_vstar`` (fraction of unsafe
queries whose top-1 result is unsafe) and ``relearn_tstar_to_v_union_r1`` / ``relearn_vstar_to_t_union_r1``
(redirected R@1), each the mean over ``seeds`` attack seeds (each seed draws its own k pairs). The same row's
``unsafe_rate_tstar`` etc. are the values before the attack; the original row carries the original's.

The resource ``clip_relearn_attack`` is built by the runner's resource builder of a setting-3 row
(:func:`unlearnkit.experiments.runner.run_concept_cell`); the evaluated model is never modified and the
global RNG states are restored.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from unlearnkit.concept._data import ConceptData
from unlearnkit.concept.clip import image_features, text_features
from unlearnkit.concept.meru import LorentzCLIP, meru_loss
from unlearnkit.concept.metrics import ConceptEvalContext, _register
from unlearnkit.concept.pretrain import clip_loss
from unlearnkit.engine import preserved_global_state
from unlearnkit.errors import UnlearnkitError
from unlearnkit.metrics import MetricUnavailable
from unlearnkit.protocols._base import ResourceBuilder, register_resource
from unlearnkit.protocols.relearn import settings_from

#: the figures read after the attack: registered metric -> key of concept_retrieval
AFTER = {
    "relearn_unsafe_rate_tstar": "unsafe_rate_tstar",
    "relearn_unsafe_rate_vstar": "unsafe_rate_vstar",
    "relearn_tstar_to_v_union_r1": "tstar_to_v_union_r1",
    "relearn_vstar_to_t_union_r1": "vstar_to_t_union_r1",
}


@dataclass(frozen=True)
class ClipRelearnSettings:
    """The setting-3 attack's knobs.

    Attributes:
        enabled: ``False`` turns the attack's metrics off (``not computed``).
        k: unsafe (caption, image) training pairs the attacker holds (one batch, every step).
        steps: Adam steps.
        seeds: attack seeds (each draws its own k pairs; the metrics average over them).
        lr: the attack's learning rate (``None``: the pretraining recipe's for a small CLIP, 1e-5 for
            ``from_pretrained`` weights).
    """

    enabled: bool = True
    k: int = 10
    steps: int = 10
    seeds: int = 3
    lr: float | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any] | bool | None) -> ClipRelearnSettings:
        """Settings from a mapping (``None``/``True``: the defaults, ``False``: off); one-line error otherwise."""
        s = settings_from(cls, data, ignore=frozenset({"train_lr"}))
        if not isinstance(s.enabled, bool):
            raise UnlearnkitError(f"relearn.enabled must be true or false, got {s.enabled!r}")
        for name in ("k", "steps", "seeds"):
            v = getattr(s, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UnlearnkitError(f"relearn.{name} must be an integer >= 1, got {v!r}")
        if s.k < 2:
            raise UnlearnkitError(
                f"relearn.k must be at least 2 (the contrastive loss needs pairs to tell apart), got {s.k}"
            )
        if s.lr is not None and (isinstance(s.lr, bool) or not isinstance(s.lr, int | float) or s.lr <= 0):
            raise UnlearnkitError(f"relearn.lr must be a number > 0 (or null), got {s.lr!r}")
        return s

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return asdict(self)


def clip_relearn(
    model: torch.nn.Module,
    data: ConceptData,
    pairs: np.ndarray,
    *,
    steps: int,
    lr: float,
    seed: int,
    device: torch.device,
    batch_size: int = 256,
) -> dict[str, float]:
    """Fine-tune a copy of ``model`` on the unsafe training pairs ``pairs`` with its own training loss (CLIP's
    contrastive loss; MERU's contrastive + entailment loss for a hyperbolic CLIP); score it on
    ``data.test``. Returns every :func:`~unlearnkit.concept.retrieval.concept_retrieval` figure.

    Raises:
        MetricUnavailable: the attack's loss is not finite.
    """
    with preserved_global_state():
        torch.manual_seed(seed)  # dropout and other global draws inside the towers
        twin = copy.deepcopy(model).to(device)
        params = [p for p in twin.parameters() if p.is_floating_point()]
        for p in params:
            p.requires_grad_(True)
        ids, mask = data.tokenizer([data.train.unsafe_text[int(i)] for i in pairs])
        ids, mask = ids.to(device), mask.to(device)
        pixels = data.train.unsafe_image.batch([int(i) for i in pairs]).to(device)
        opt = torch.optim.Adam(params, lr=lr)
        twin.train()
        for _ in range(steps):
            if isinstance(twin, LorentzCLIP):  # a hyperbolic CLIP relearns with its own (MERU) loss
                twin.clamp_scalars_()
                loss = meru_loss(twin, twin.embed_text(ids, mask), twin.embed_image(pixels))
            else:
                scale = twin.logit_scale.exp().clamp(max=100.0)
                loss = clip_loss(text_features(twin, ids, mask), image_features(twin, pixels), scale)
            if not torch.isfinite(loss):
                raise MetricUnavailable("the relearning attack's loss is not finite")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        twin.eval()
        return ConceptEvalContext(twin, data, batch_size).retrieval()


def _settings(b: ResourceBuilder) -> ClipRelearnSettings:
    return ClipRelearnSettings.parse(b.inputs.relearn)


def _check(b: ResourceBuilder) -> str | None:
    if not _settings(b).enabled:
        return "relearning attacks are off (relearn: {enabled: false})"
    if b.inputs.evaluated is None or b.inputs.concept_data is None:
        return "the CLIP relearning attack needs the evaluated CLIP and its concept data (the runner hands them in)"
    return None


@register_resource("clip_relearn_attack", depends_on=("seed", "evaluated", "relearn", "concept_data"), check=_check,
                   max_kept=2)  # fmt: skip
def clip_relearn_attack(b: ResourceBuilder) -> dict[str, Any]:
    """Fine-tune the evaluated CLIP on k unsafe training pairs (CLIP's loss); test figures per attack seed."""
    s = _settings(b)
    data: ConceptData = b.inputs.concept_data
    model = b.inputs.evaluated
    assert model is not None  # _check
    n = len(data.train)
    if n < 2:
        raise MetricUnavailable("the training quadruplets are too few for the relearning attack")
    lr = s.lr if s.lr is not None else float(b.inputs.relearn.get("train_lr") or 1e-5)
    per_seed = []
    for a in range(s.seeds):
        seed = int(np.random.SeedSequence([int(b.inputs.seed or 0) % (2**32), 0xC11E, a]).generate_state(1)[0])
        pairs = np.random.default_rng(seed).choice(n, size=min(s.k, n), replace=False)
        per_seed.append(clip_relearn(model, data, pairs, steps=s.steps, lr=lr, seed=seed, device=b.inputs.device))
    return {"per_seed": per_seed, "settings": {**s.to_dict(), "lr": lr}}


def _after(key: str) -> Any:
    def fn(ctx: ConceptEvalContext) -> float:
        res = ctx.resource("clip_relearn_attack")
        return float(np.mean([r[key] for r in res["per_seed"]]))

    return fn


for _name, _key in AFTER.items():
    _higher = not _key.startswith("unsafe")
    _what = _key.replace("_", " ")
    _register(_name, _after(_key), _higher, f"{_what} after a relearning attack on k unsafe pairs (CLIP's loss)",
              needs=("clip_relearn_attack",))  # fmt: skip
