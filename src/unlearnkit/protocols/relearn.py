"""Relearning attacks: does the forgotten knowledge come back after a few fine-tuning steps?

A model that has "forgotten" a class but relearns it from a handful of images has hidden the class, not
removed it. This module builds the resource ``relearn_attack`` for one evaluated model (the model the user
receives), with the retrained model's value under the *same* attack as the floor to compare with:

* **Fine-tuning attack** (class requests; Goel et al., arXiv 2201.06640; Hu et al., ICLR 2025): a deep copy
  of the model is trained with Adam at the training learning rate for ``steps`` steps on batches of ``k``
  forget-class *training* images (the attacker's fixed k-shot set) plus retain images filling the batch to
  the training batch size; the forget-test accuracy is measured after every step (the recovery curve).
* **RTT** (random requests; Deeb & Roger, arXiv 2410.08827): the forget set is split in two seeded halves;
  the attack draws its ``k`` forget images per step from half A, the accuracy is measured on half B.
* **Linear probe**: a logistic regression on penultimate features (the input of the classifier head: every
  ``nn.Linear`` whose output is the class logits, concatenated — one for a plain network, one per member for
  an ensemble such as SISA's; the last ``nn.Linear`` when none matches) fit on a retain sample plus ``k``
  forget images, scored on the forget test set (class requests) or half B (random requests).

Options (off by default): the **forget-only** attack (batches of the ``k`` forget images alone) and the
**retain-only** attack (batches of retain images only, zero forget images: Siddiqui et al., arXiv 2505.22310,
find that forget accuracy returns even then), and ``extra_steps`` that continue every attack beyond the budget
for the recovery curve (the after-attack values and RelearnTime stay at ``steps``). Setting-2 (no-retain) rows
are attacked on the merged ViT they return, at ``setting2_shots`` (10) forget images only; the probe then
reads the ViT's CLS token before the head.

Each attack is repeated with ``seeds`` attack seeds and averaged by the metrics
(:mod:`unlearnkit.metrics.relearn`). Cost: the attack's fine-tuning steps dominate (on CPU they are
compute-bound: batching the seeds with ``vmap`` was measured slower there, as grouped convolutions); the probe's
features are extracted in one pass per model and the accuracy before the attack is measured once.

The evaluated model is never modified (the attack trains a deep copy,
the probe hooks another copy) and the caller's global RNG states are restored afterwards.

Whatever ``forward()`` uses is attacked: every floating-point parameter of the copy is trained, frozen ones
included (WF-Net: the base weights and α together; SISA: every shard, the ensemble's output is the loss).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from unlearnkit.engine import iterate, preserved_global_state
from unlearnkit.errors import UnlearnkitError
from unlearnkit.metrics import MetricUnavailable
from unlearnkit.protocols._base import ResourceBuilder, register_resource

_S = TypeVar("_S")


def settings_from(cls: type[_S], data: Mapping[str, Any] | bool | None, ignore: frozenset[str] = frozenset()) -> _S:
    """A relearning settings dataclass from a mapping (``None``/``True``: the defaults, ``False``: off); keys in
    ``ignore`` are dropped, any other unknown key is a one-line error. Range checks are the caller's."""
    if data is None or data is True:
        return cls()
    if data is False:
        return cls(enabled=False)  # type: ignore[call-arg]
    if not isinstance(data, Mapping):
        raise UnlearnkitError(f"relearn settings must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known - ignore)
    if unknown:
        raise UnlearnkitError(f"unknown relearn setting {unknown[0]!r}; expected some of {', '.join(sorted(known))}")
    return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class RelearnSettings:
    """The attack's knobs.

    Attributes:
        enabled: ``False`` turns every relearning metric off (``not computed``).
        k: forget images the attacker holds (class requests) / draws per step from half A (random requests).
        steps: Adam steps of the fine-tuning attack.
        seeds: attack seeds (the metrics average over them).
        lr: attack learning rate (``None``: the training recipe's).
        batch_size: attack batch size, k forget + retain filling (``None``: the training recipe's).
        probe_retain: retain images in the linear probe's training set (besides the k forget images).
        forget_only: also run the variant whose batches hold only the ``k`` forget images (no retain fill).
        retain_only: also run the variant whose batches hold only retain images (zero forget images).
        extra_steps: continue every attack this many steps beyond the budget (the recovery curve only: the
            after-attack values and RelearnTime stay at ``steps``).
        setting2_shots: the setting-2 (no-retain) rows attacked: those given this many forget images.
    """

    enabled: bool = True
    k: int = 10
    steps: int = 20
    seeds: int = 3
    lr: float | None = None
    batch_size: int | None = None
    probe_retain: int = 500
    forget_only: bool = False
    retain_only: bool = False
    extra_steps: int = 0
    setting2_shots: int = 10

    @classmethod
    def parse(cls, data: Mapping[str, Any] | bool | None) -> RelearnSettings:
        """Settings from a mapping (``None``/``True``: the defaults, ``False``: off); one-line error otherwise."""
        s = settings_from(cls, data)
        s.validate()
        return s

    def validate(self) -> None:
        """Raise a one-line :class:`UnlearnkitError` for an out-of-range knob."""
        for name in ("enabled", "forget_only", "retain_only"):
            if not isinstance(getattr(self, name), bool):
                raise UnlearnkitError(f"relearn.{name} must be true or false, got {getattr(self, name)!r}")
        for name, lo in (("k", 1), ("steps", 1), ("seeds", 1), ("probe_retain", 1), ("extra_steps", 0),
                         ("setting2_shots", 1)):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise UnlearnkitError(f"relearn.{name} must be an integer >= {lo}, got {v!r}")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < self.k
        ):
            raise UnlearnkitError(
                f"relearn.batch_size must be an integer >= relearn.k = {self.k}, got {self.batch_size!r}"
            )
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, int | float) or self.lr <= 0):
            raise UnlearnkitError(f"relearn.lr must be a number > 0 (or null: the training lr), got {self.lr!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (the resource key and the run config)."""
        return asdict(self)


@dataclass
class RelearnResult:
    """What ``relearn_attack`` measured for one model.

    Attributes:
        kind: ``"class"`` (forget-class attack, measured on forget_test) or ``"rtt"`` (split forget set).
        curves: per attack seed, the measured accuracy before the attack and after each step
            (``steps + extra_steps + 1`` values; the budget ends at index ``steps``).
        probe: per attack seed, the linear probe's accuracy on the measured set.
        settings: the knobs used, with ``lr`` and ``batch_size`` resolved.
        attacked: what was trained (one line, for reports).
        variants: the optional attacks (``"forget_only"``, ``"retain_only"``), curves per seed as ``curves``.
    """

    kind: str
    curves: list[list[float]]
    probe: list[float]
    settings: dict[str, Any]
    attacked: str
    variants: dict[str, list[list[float]]] = field(default_factory=dict)

    @property
    def budget(self) -> int:
        """The attack's step budget (the after-attack values are read there)."""
        return int(self.settings.get("steps", len(self.curves[0]) - 1))

    def mean_curve(self, variant: str | None = None) -> list[float]:
        """Accuracy per step, averaged over attack seeds (of ``variant``, default the main attack)."""
        curves = self.curves if variant is None else self.variants[variant]
        return np.asarray(curves, dtype=np.float64).mean(axis=0).tolist()


#: the optional attack variants: name -> (forget images per batch, whether retain images fill the batch)
VARIANTS = ("forget_only", "retain_only")


# -- data ------------------------------------------------------------------------------------------------------


def _batch(ds: Dataset, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples ``idx`` of ``ds`` as one (x, y) batch on CPU."""
    return next(iterate(Subset(ds, [int(i) for i in idx]), max(1, len(idx))))


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def _accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool = False
) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(_layout(x[i : i + 512].to(device), channels_last)).argmax(1).cpu()
                          for i in range(0, len(x), 512)])  # fmt: skip
    model.train(was)
    return float((pred == y).float().mean())


def _sub_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) % (2**32) for p in parts]).generate_state(1)[0])


# -- the attacked copy -------------------------------------------------------------------------------------------


def attackable_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every floating-point parameter trainable (what the attack fine-tunes).

    Raises:
        MetricUnavailable: the model cannot be copied or has no floating-point parameters.
    """
    try:
        twin = copy.deepcopy(model)
    except Exception as e:  # a module holding an uncopyable handle
        raise MetricUnavailable(
            f"the model cannot be copied for the relearning attack ({type(e).__name__}: {e})"
        ) from None
    params = [p for p in twin.parameters() if p.is_floating_point()]
    if not params:
        raise MetricUnavailable("the model has no floating-point parameters to fine-tune")
    for p in params:
        p.requires_grad_(True)
    return twin


def describe_attacked(model: nn.Module) -> str:
    """One line naming what the attack trains."""
    n = sum(p.numel() for p in model.parameters() if p.is_floating_point())
    frozen = sum(p.numel() for p in model.parameters() if p.is_floating_point() and not p.requires_grad)
    what = f"{type(model).__name__}: all {n:,} parameters"
    return what + (f" ({frozen:,} frozen by the method, unfrozen for the attack)" if frozen else "")


def finetune_attack(
    model: nn.Module,
    attack_x: torch.Tensor,
    attack_y: torch.Tensor,
    retain: Dataset,
    retain_pool: np.ndarray,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    *,
    k: int,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    start: float | None = None,
) -> list[float]:
    """Fine-tune a copy of ``model``; return the accuracy on (eval_x, eval_y) before and after each step.

    Each step's batch holds ``k`` images of ``attack_x`` (all of them when it has ``k``; else drawn in turn
    from a seeded permutation; ``k = 0``: none) plus ``batch_size - k`` retain images drawn from
    ``retain_pool``. ``start``: the accuracy before the attack when the caller has it (the same model on the
    same set), else measured. Global RNG states are restored on exit; ``model`` is not modified.

    Convolution weights and image batches use the channels-last memory layout (faster convolutions on CPU;
    the same arithmetic up to float rounding).
    """
    with preserved_global_state():
        torch.manual_seed(seed)  # dropout and other global draws inside forward()
        rng = np.random.default_rng(seed)
        twin = attackable_copy(model).to(device)
        cl = any(p.ndim == 4 for p in twin.parameters())
        if cl:
            twin = twin.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam([p for p in twin.parameters() if p.requires_grad], lr=lr)
        order = rng.permutation(len(attack_y))
        k = min(k, len(order))
        fill = max(0, batch_size - k)
        curve = [_accuracy(twin, eval_x, eval_y, device, cl) if start is None else float(start)]
        pos = 0
        for _ in range(steps):
            take = order[np.arange(pos, pos + k) % len(order)] if k else order[:0]
            pos += len(take)
            xs, ys = [attack_x[take]], [attack_y[take]]
            if fill and len(retain_pool):
                rx, ry = _batch(retain, rng.choice(retain_pool, size=fill, replace=len(retain_pool) < fill))
                xs.append(rx)
                ys.append(ry)
            x, y = _layout(torch.cat(xs).to(device), cl), torch.cat(ys).to(device)
            twin.train()
            loss = nn.functional.cross_entropy(twin(x).float(), y)
            if not torch.isfinite(loss):
                raise MetricUnavailable("the relearning attack's loss is not finite")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            curve.append(_accuracy(twin, eval_x, eval_y, device, cl))
        return curve


# -- the linear probe --------------------------------------------------------------------------------------------


def head_layers(model: nn.Module, num_classes: int) -> list[nn.Linear]:
    """The classifier heads: every ``nn.Linear`` with ``num_classes`` outputs, else the last ``nn.Linear``."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    heads = [m for m in linears if m.out_features == num_classes]
    return heads or linears[-1:]


def penultimate_features(model: nn.Module, x: torch.Tensor, num_classes: int, device: torch.device) -> np.ndarray:
    """Inputs of the classifier heads (concatenated) for ``x``, as ``[n, d]`` float64.

    Hooks a deep copy, so ``model`` keeps its hooks and state. For a timm ViT the head's input is the CLS
    token after the final norm (``global_pool="token"``).

    Raises:
        MetricUnavailable: the model has no ``nn.Linear`` layer.
    """
    twin = copy.deepcopy(model).to(device).eval()
    heads = head_layers(twin, num_classes)
    if not heads:
        raise MetricUnavailable("the model has no nn.Linear layer to read penultimate features from")
    grabbed: list[torch.Tensor] = []
    hooks = [h.register_forward_hook(lambda _m, inp, _out: grabbed.append(inp[0].detach())) for h in heads]
    out = []
    with torch.no_grad():
        for i in range(0, len(x), 512):
            grabbed.clear()
            twin(x[i : i + 512].to(device))
            out.append(torch.cat([g.flatten(1).float().cpu() for g in grabbed], dim=1))
    for h in hooks:
        h.remove()
    return torch.cat(out).double().numpy()


def probe_accuracy(
    train_f: np.ndarray, train_y: np.ndarray, test_f: np.ndarray, test_y: np.ndarray, seed: int
) -> float:
    """Accuracy on (test_f, test_y) of a logistic regression fit on standardised (train_f, train_y)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, tol=1e-3, random_state=seed % (2**31)))
    clf.fit(train_f, train_y)
    return float((clf.predict(test_f) == test_y).mean())


# -- the resource ------------------------------------------------------------------------------------------------


def settings_of(b: ResourceBuilder) -> RelearnSettings:
    """The builder's relearning settings (validated)."""
    return RelearnSettings.parse(b.inputs.relearn)


def _check(b: ResourceBuilder) -> str | None:
    s = settings_of(b)
    if not s.enabled:
        return "relearning attacks are off (relearn: {enabled: false})"
    if b.inputs.evaluated is None:
        return "the relearning attack needs the evaluated model (the runner and unlearnkit.evaluate hand it in)"
    if b.inputs.shots is not None and b.inputs.shots != s.setting2_shots:
        return (
            f"setting-2 rows are attacked at k = {s.setting2_shots} forget images only "
            f"(this row has k = {b.inputs.shots}; relearn.setting2_shots)"
        )
    if len(b.inputs.scenario.retain_idx) == 0:
        return "the retain set is empty (the attack fills its batches with retain images)"
    return None


@dataclass
class _SeedPlan:
    seed: int
    shots: np.ndarray  # the attacker's forget images (class) / half A (RTT), train indices
    held: np.ndarray | None  # RTT: half B, train indices (class: None, forget_test is measured)
    probe_retain: np.ndarray  # the probe's retain sample, train indices


@register_resource(
    "relearn_attack", depends_on=("scenario", "model", "train", "seed", "shots", "evaluated", "relearn"),
    check=_check, max_kept=2,
)  # fmt: skip
def relearn_attack(b: ResourceBuilder) -> RelearnResult:
    """Fine-tuning attack (class) or RTT (random) and a few-shot linear probe on the evaluated model.

    Per attack seed the draws are, in order from one seeded generator: the attacker's ``k`` forget images
    (class) or the split of the forget set (RTT), then the probe's retain sample; the fine-tuning attack
    draws its retain fill from its own generator of the same seed. The probe's features are extracted once
    for every image any seed needs, and the accuracy before the attack once for the (shared) forget test set.
    """
    i = b.inputs
    s = settings_of(b)
    sc = i.scenario
    model = i.evaluated
    assert model is not None  # _check
    lr = s.lr if s.lr is not None else (i.train.lr if i.train is not None else 1e-3)
    bs = s.batch_size if s.batch_size is not None else (i.train.batch_size if i.train is not None else 64)
    bs = max(bs, s.k)
    device = i.device
    train_ds, num_classes = sc.bundle.train, sc.bundle.num_classes
    forget_idx, retain_idx = np.asarray(sc.forget_idx), np.asarray(sc.retain_idx)
    class_level = sc.forget_test_idx is not None
    if class_level and len(sc.forget_test_idx) == 0:
        raise MetricUnavailable("the forget test split is empty")
    if len(forget_idx) < (1 if class_level else 2):
        raise MetricUnavailable("the forget set is too small for the relearning attack")
    attacked = describe_attacked(model)
    total = s.steps + s.extra_steps
    plans = []
    for a in range(s.seeds):
        seed = _sub_seed(i.seed or 0, 0x7E1EA2, a)
        rng = np.random.default_rng(seed)
        if class_level:
            shots, held = rng.choice(forget_idx, size=min(s.k, len(forget_idx)), replace=False), None
        else:  # RTT: attack half A, measure half B (seeded split)
            perm = rng.permutation(forget_idx)
            shots, held = perm[: len(perm) // 2], perm[len(perm) // 2 :]
        probe_retain = rng.choice(retain_idx, size=min(s.probe_retain, len(retain_idx)), replace=False)
        plans.append(_SeedPlan(seed, shots, held, probe_retain))
    # the probe's features: one pass over every training image any seed needs (+ the forget test set)
    needed = [np.concatenate([p.probe_retain, p.shots, *([] if p.held is None else [p.held])]) for p in plans]
    rows = np.unique(np.concatenate(needed))
    where = {int(r): j for j, r in enumerate(rows)}
    rx, ry = _batch(train_ds, rows)
    if class_level:
        test_x, test_y = _batch(sc.bundle.test, np.asarray(sc.forget_test_idx))
        feats = penultimate_features(model, torch.cat([rx, test_x]), num_classes, device)
        f_rows, f_test = feats[: len(rows)], feats[len(rows) :]
        start: float | None = _accuracy(model, test_x, test_y, device)
    else:
        f_rows, start = penultimate_features(model, rx, num_classes, device), None
    curves: list[list[float]] = []
    variants: dict[str, list[list[float]]] = {v: [] for v in VARIANTS if getattr(s, v)}
    probes: list[float] = []
    with preserved_global_state():
        for p in plans:
            if class_level:
                eval_x, eval_y = test_x, test_y
            else:
                sel = [where[int(r)] for r in p.held]  # type: ignore[union-attr]
                eval_x, eval_y = rx[sel], ry[sel]
            sel = [where[int(r)] for r in p.shots]
            ax, ay = rx[sel], ry[sel]
            common = {"steps": total, "lr": lr, "batch_size": bs, "seed": p.seed, "device": device}
            curves.append(finetune_attack(model, ax, ay, train_ds, retain_idx, eval_x, eval_y, k=min(s.k, len(ax)),
                                          start=start, **common))  # fmt: skip
            if "forget_only" in variants:  # the k forget images alone, no retain fill
                variants["forget_only"].append(finetune_attack(
                    model, ax, ay, train_ds, retain_idx[:0], eval_x, eval_y, k=min(s.k, len(ax)), start=start,
                    **common))  # fmt: skip
            if "retain_only" in variants:  # zero forget images: whole batches of retain images
                variants["retain_only"].append(finetune_attack(
                    model, ax, ay, train_ds, retain_idx, eval_x, eval_y, k=0, start=start, **common))  # fmt: skip
            train_sel = [where[int(r)] for r in np.concatenate([p.probe_retain, p.shots[: s.k]])]
            py = ry[train_sel].numpy()
            if len(np.unique(py)) < 2:
                raise MetricUnavailable("the probe's training sample has a single class")
            if class_level:
                test_f = f_test
            else:
                test_f = f_rows[[where[int(r)] for r in p.held]]  # type: ignore[union-attr]
            probes.append(probe_accuracy(f_rows[train_sel], py, test_f, eval_y.numpy(), p.seed))
    resolved = {**s.to_dict(), "lr": float(lr), "batch_size": int(bs)}
    return RelearnResult("class" if class_level else "rtt", curves, probes, resolved, attacked, variants)
