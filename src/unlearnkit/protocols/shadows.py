"""LiRA / U-LiRA shadow models: the training protocol behind the ``shadow_bank`` and ``unlearned_shadows`` resources.

The attacks themselves (and their references: Carlini et al. 2022, arXiv 2112.03570; Hayes et al., SaTML
2025, arXiv 2403.01218; evaluation spec §2.1-2.2) are in :mod:`unlearnkit.metrics.shadow_attacks`; this
module trains what they compare against. The U-LiRA construction follows the paper's game (below) and the
spec's summary (§2.2).

**Scored examples.** The target models' member side is the scenario's forget set D_f, its non-member
side a held-out split (``nonmember_split``: ``auto`` = the forgotten class's test images for class-level
requests, the test set otherwise; or ``test`` / ``val`` / ``forget_test``). The larger side is
subsampled (seeded) to the smaller one's size k, so the 2k scored examples are balanced.

**Shadow models.** The population pool is D (the scenario's training set) plus the k scored
non-members: an example must be trained on by some shadows to have an IN distribution. Each of the M
shadows trains, with the run's recipe, on half of the pool. The keep mask ``keep[m, i]`` (True = shadow
m trains on pool example i, stored on the :class:`ShadowBank`) is drawn in complementary pairs: pool
examples are paired at random, each pair gets a random pattern with ⌊M/2⌋ ones and its complement, so
every example is IN for ⌊M/2⌋ or ⌈M/2⌉ shadows (the reference ``train.py`` guarantees the same with its
``num_experiments`` draw) and every shadow trains on exactly half of the 2k scored examples.

**LiRA (online).** IN = φ(x) of shadows that trained on x, OUT = φ(x) of those that did not (the
``shadow_bank`` resource holds both: the untouched shadows' φ and the keep mask).

**U-LiRA.** Every shadow is then unlearned with the method and hyperparameters under audit. Its forget
set F_m is the half of the scored examples it trained on (k examples, so |F_m| = |D_f| whenever the
non-member split has at least |D_f| examples), plus, for class-level requests, every other example of the
forgotten part in its half (the shadow forgets the whole class, as the target did), or, for sample-level
requests whose D_f was larger than k, random other examples of its half up to |D_f|. Its retain set is
the rest of its half. For a scored x, IN = φ(x) of the unlearned shadows with x ∈ F_m (every shadow that
trained on a scored x has unlearned it) and, by default (``ulira_out="unlearned"``), OUT = φ(x) of the
*unlearned* shadows whose training half never held x: both sides come from models the audited method has
run on, so a method that moves every example's confidence (forgotten or never seen) moves IN, OUT and the
target together, and only what tells a forgotten x from a never-seen one is measured. This is the game
of Hayes et al. (an unlearned model; was x in its training set or not). ``ulira_out="untouched"`` takes
OUT from the shadows as trained, not unlearned (the pairing of Apollo's ``ULiRA.py``); it nearly agrees
with the default for retraining-like methods, and otherwise reads a global shift as (or against) membership.
The held-out target models (the audited model, never a shadow) are scored on their forget vs non-member
examples; we report AUC, TPR at 1% FPR and the best balanced attack accuracy (50% = indistinguishable from
retraining). The ``unlearned_shadows`` resource is the ``[M, 2k]`` φ of the unlearned shadows; both OUT
choices use the same trained and unlearned shadows.

**Cost and caching.** Shadows are trained one after another with :func:`unlearnkit.engine.train_model`
(a plain loop: :func:`unlearnkit.engine.ensemble.train_ensemble` trains every member on the same data,
while each shadow needs its own half of the pool) and
cached by config hash in a :class:`~unlearnkit.engine.ModelCache` (the pool's exact example identities,
the keep row, model, recipe and seed); unlearned shadows are cached under the method and its
hyperparameters as well. Without a cache the untouched shadows are kept in memory for reuse. A model
given as a factory callable (not a registered name) is never cached on disk: its name does not identify it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, Subset

from unlearnkit.data import ArrayDataset
from unlearnkit.engine import (
    ModelCache,
    TrainConfig,
    compute_context,
    config_hash,
    predict_logits,
    resolve_device,
    seed_everything,
    train_model,
)
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import Method, UnlearnData, create_method
from unlearnkit.metrics import MetricUnavailable, NotComputed
from unlearnkit.metrics._base import MetricValue
from unlearnkit.metrics.forget_quality import logit_scaled_confidence
from unlearnkit.metrics.shadow_attacks import (
    LIRA_METRICS,
    ULIRA_METRICS,
    ULIRA_OUT_DEFAULT,
    attack_figures,
    check_ulira_out,
)
from unlearnkit.models import MODELS, create_model, factory_fingerprint
from unlearnkit.protocols._base import ModelFactory, ResourceBuilder, register_resource
from unlearnkit.scenario import Scenario

#: fewest IN and OUT shadow values per example (a standard deviation needs two), so n_shadows >= 4
MIN_PER_SIDE = 2
NONMEMBER_SPLITS = ("auto", "test", "val", "forget_test")
#: pseudo-methods of the runner's rows that unlearned nothing
NO_METHOD_ROWS = ("original", "audit")

Targets = nn.Module | Sequence[nn.Module]


def _not_computed(names: Sequence[str], reason: str) -> dict[str, MetricValue]:
    return {n: NotComputed(reason) for n in names}


def _paired_keep(n_shadows: int, n_cols: int, rng: np.random.Generator) -> np.ndarray:
    """``[M, n_cols]`` keep mask built from complementary column pairs (each column IN for ~M/2 rows)."""
    keep = np.zeros((n_shadows, n_cols), dtype=bool)
    order = rng.permutation(n_cols)
    n_pairs = (n_cols + 1) // 2
    # one random pattern with floor(M/2) ones per pair (row-wise argsort of uniforms = random permutation)
    patterns = np.argsort(rng.random((n_pairs, n_shadows)), axis=1) < n_shadows // 2
    first, second = order[0::2], order[1::2]
    keep[:, first] = patterns[: len(first)].T
    keep[:, second] = ~patterns[: len(second)].T
    return keep


def _shadow_seed(seed: int, m: int) -> int:
    return int(np.random.SeedSequence([seed, m]).generate_state(1)[0] % (2**31))


@dataclass(eq=False)
class ShadowBank:
    """The shadow models of one scenario: pool, keep mask, and φ of the untouched shadows.

    Build with :meth:`build`; score targets with :meth:`lira` and :meth:`ulira`. One bank serves every
    model audited on the scenario (the original, the retrained model, each method).

    Attributes:
        keep: ``[M, P]`` bool, True where shadow m trains on pool example i.
        scored: ``[2k]`` pool positions of the scored examples, the k forget examples first.
        is_member: ``[2k]`` bool, True for the target's forget examples.
        pool_labels: ``[P]`` labels of the pool.
        phi_base: ``[M, 2k]`` φ of the untouched shadows on the scored examples (after the first use).
    """

    scenario: Scenario
    model_name: str
    model_kwargs: dict[str, Any]
    train_cfg: TrainConfig
    n_shadows: int
    seed: int
    device: torch.device
    cache: ModelCache | None
    nonmember_split: str
    pool: Dataset
    pool_labels: np.ndarray
    pool_id: str
    forget_pos: np.ndarray
    scored: np.ndarray
    is_member: np.ndarray
    keep: np.ndarray
    phi_base: np.ndarray | None = None
    factory: Callable[[], nn.Module] | None = None
    _models: dict[int, nn.Module] = field(default_factory=dict, repr=False)

    # -- construction --------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        scenario: Scenario,
        model: ModelFactory,
        train_cfg: TrainConfig,
        n_shadows: int,
        *,
        device: str | torch.device = "auto",
        seed: int | None = None,
        cache: ModelCache | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        nonmember_split: str = "auto",
    ) -> ShadowBank:
        """Draw the pool, the scored examples and the keep mask (no training yet).

        ``model`` is a registered model name or a zero-argument factory of fresh models (then ``cache`` is
        not used: a callable has no stable identity for a disk key).

        Raises:
            UnlearnkitError: bad input (unknown model, n_shadows not an integer >= 0, unknown split).
            MetricUnavailable: too few shadows, or no non-member examples to compare with.
        """
        if isinstance(n_shadows, bool) or not isinstance(n_shadows, (int, np.integer)) or n_shadows < 0:
            raise UnlearnkitError(f"n_shadows must be an integer >= 0, got {n_shadows!r}")
        factory = None if isinstance(model, str) else model
        if factory is not None:
            if not callable(factory):
                raise UnlearnkitError(f"model must be a registered name or a callable, got {type(model).__name__}")
            model_name, cache = f"<factory {getattr(factory, '__qualname__', type(factory).__name__)}>", None
        else:
            model_name = model
            MODELS.get(model_name)
        if not isinstance(train_cfg, TrainConfig):
            raise UnlearnkitError(f"train_cfg must be a TrainConfig, got {type(train_cfg).__name__}")
        if nonmember_split not in NONMEMBER_SPLITS:
            raise UnlearnkitError(
                f"unknown nonmember_split {nonmember_split!r}; expected one of {', '.join(NONMEMBER_SPLITS)}"
            )
        b = scenario.bundle
        if factory is None:
            try:
                create_model(model_name, b.num_classes, b.in_shape, **dict(model_kwargs or {}))
            except TypeError as e:
                raise UnlearnkitError(f"model {model_name!r} rejects its model_kwargs: {e}") from None
        device = resolve_device(device)
        seed = scenario.seed if seed is None else int(seed)
        if n_shadows == 0:
            raise MetricUnavailable("LiRA is off (0 shadow models)")
        if n_shadows // 2 < MIN_PER_SIDE:
            raise MetricUnavailable(
                f"too few shadow models: {n_shadows} give every example only {n_shadows // 2} IN or OUT "
                f"shadows, and the Gaussian fits need >= {MIN_PER_SIDE} of each (use >= {2 * MIN_PER_SIDE})"
            )
        split = nonmember_split
        if split == "auto":
            split = "forget_test" if scenario.request.is_class_level else "test"
        nm_all = scenario.split_indices(split)
        if nm_all is None or len(nm_all) == 0:
            raise MetricUnavailable(f"the {scenario.request} request has no {split} examples to use as non-members")

        rng = np.random.default_rng([seed, 0x11A])  # scored-example draw and keep mask
        forget_all = scenario.forget_idx
        k = min(len(forget_all), len(nm_all))
        forget_sel = np.sort(rng.choice(forget_all, k, replace=False)) if len(forget_all) > k else forget_all
        nm_sel = np.sort(rng.choice(nm_all, k, replace=False)) if len(nm_all) > k else np.asarray(nm_all)

        # the pool: D (train_idx, sorted) followed by the k chosen non-members
        train_idx = scenario.train_idx
        nm_source, nm_targets = (b.train, b.train_targets) if split == "val" else (b.test, b.test_targets)
        pool = _concat(b.train, train_idx, nm_source, nm_sel)
        pool_labels = np.concatenate([b.train_targets[train_idx], nm_targets[nm_sel]])
        n_d = len(train_idx)
        member_pos = np.searchsorted(train_idx, forget_sel)
        scored = np.concatenate([member_pos, n_d + np.arange(k)])
        is_member = np.concatenate([np.ones(k, bool), np.zeros(k, bool)])
        forget_pos = np.searchsorted(train_idx, forget_all)

        # keep mask: scored examples paired among themselves (each shadow gets exactly k of them)
        keep = np.zeros((n_shadows, n_d + k), dtype=bool)
        keep[:, scored] = _paired_keep(n_shadows, 2 * k, rng)
        rest = np.setdiff1d(np.arange(n_d + k), scored)
        keep[:, rest] = _paired_keep(n_shadows, len(rest), rng)

        pool_id = config_hash({
            "dataset": scenario.spec(), "train_idx": config_hash({"i": train_idx.tolist()}),
            "nonmembers": [split == "val", nm_sel.tolist()],
        })  # fmt: skip
        return cls(
            scenario=scenario, model_name=model_name, model_kwargs=dict(model_kwargs or {}), train_cfg=train_cfg,
            n_shadows=int(n_shadows), seed=seed, device=device, cache=cache, nonmember_split=split, pool=pool,
            pool_labels=pool_labels, pool_id=pool_id, forget_pos=forget_pos, scored=scored, is_member=is_member,
            keep=keep, factory=factory,
        )  # fmt: skip

    # -- models ---------------------------------------------------------------------------------------
    def make_model(self) -> nn.Module:
        """A freshly initialised model of the audited architecture."""
        if self.factory is not None:
            return self.factory()
        b = self.scenario.bundle
        return create_model(self.model_name, b.num_classes, b.in_shape, **self.model_kwargs)

    def _base_key(self, m: int) -> dict[str, Any]:
        """Cache key of untouched shadow ``m``: pool, keep row, data and architecture fingerprints, recipe,
        seed, and the compute context of this process (device type, the torch threads it trains with)."""
        b = self.scenario.bundle
        compute = compute_context(self.device, threads=torch.get_num_threads(), deterministic=True,
                                  amp=self.train_cfg.amp)  # fmt: skip
        return {
            "role": "lira_shadow", "pool": self.pool_id,
            "keep": config_hash({"i": np.flatnonzero(self.keep[m]).tolist()}),
            "data": b.fingerprint(), "model": self.model_name, "model_kwargs": self.model_kwargs,
            "arch": factory_fingerprint(self.factory or self.model_name, b.num_classes, b.in_shape,
                                        **self.model_kwargs),
            "train": self.train_cfg.to_dict(), "seed": _shadow_seed(self.seed, m), "compute": compute,
        }  # fmt: skip

    def _get_or_train(self, key: dict[str, Any], train: Callable[[nn.Module], dict[str, Any]], seed: int) -> nn.Module:
        seed_everything(seed)  # the fresh model's initial weights
        if self.cache is None:
            model = self.make_model()
            train(model)
            return model.eval()
        model, _, _ = self.cache.get_or_train(key, self.make_model, train)
        return model

    def shadow(self, m: int) -> nn.Module:
        """Untouched shadow ``m``: trained on the pool examples where ``keep[m]`` (cached)."""
        if m in self._models:
            return self._models[m]
        seed = _shadow_seed(self.seed, m)
        train_set = Subset(self.pool, np.flatnonzero(self.keep[m]).tolist())

        def _train(model: nn.Module) -> dict[str, Any]:
            gen = torch.Generator().manual_seed(seed)
            train_model(model, train_set, self.train_cfg, device=self.device, generator=gen,
                        where=f"training LiRA shadow model {m}")  # fmt: skip
            return {}

        model = self._get_or_train(self._base_key(m), _train, seed)
        if self.cache is None:
            self._models[m] = model
        return model

    def phi(self, model: nn.Module) -> np.ndarray:
        """φ of ``model`` on the scored examples ``[2k]``."""
        logits = predict_logits(model, Subset(self.pool, self.scored.tolist()), device=self.device)
        return logit_scaled_confidence(logits, self.pool_labels[self.scored])

    def base_phi(self) -> np.ndarray:
        """``[M, 2k]`` φ of the untouched shadows (trains or loads them on first use)."""
        if self.phi_base is None:
            self.phi_base = np.stack([self.phi(self.shadow(m)) for m in range(self.n_shadows)])
        return self.phi_base

    def forget_set(self, m: int) -> np.ndarray:
        """Pool positions shadow ``m`` unlearns in U-LiRA (see the module docstring)."""
        kept = self.keep[m]
        chosen = self.scored[kept[self.scored]]  # the half of the scored examples it trained on
        if self.scenario.request.is_class_level:  # the rest of the forgotten part in its half
            chosen = np.union1d(chosen, self.forget_pos[kept[self.forget_pos]])
        elif len(chosen) < len(self.scenario.forget_idx):
            others = np.setdiff1d(np.flatnonzero(kept), self.scored)
            extra = np.random.default_rng([self.seed, m, 0xF0]).choice(
                others, min(len(others), len(self.scenario.forget_idx) - len(chosen)), replace=False
            )
            chosen = np.union1d(chosen, extra)
        return np.sort(chosen)

    # -- attacks --------------------------------------------------------------------------------------
    @staticmethod
    def _targets(targets: Targets) -> list[nn.Module]:
        models = [targets] if isinstance(targets, nn.Module) else list(targets) if isinstance(targets, Sequence) else []
        if not models or not all(isinstance(t, nn.Module) for t in models):
            raise UnlearnkitError("target_model must be an nn.Module or a non-empty sequence of them")
        return models

    def _attack(
        self,
        prefix: str,
        models: list[nn.Module],
        in_phi: np.ndarray,
        out_phi: np.ndarray,
        *,
        online: bool,
        fixed_variance: bool,
    ) -> dict[str, MetricValue]:
        try:
            t_phis = [self.phi(t) for t in models]
        except UnlearnkitError as e:  # e.g. NaN logits
            names = LIRA_METRICS if prefix == "lira" else ULIRA_METRICS
            return _not_computed(names, f"the target model's outputs on the scored examples: {e}")
        return dict(attack_figures(prefix, t_phis, in_phi, out_phi, self.keep[:, self.scored], self.is_member,
                                   online=online, fixed_variance=fixed_variance))  # fmt: skip

    def lira(
        self, target_model: Targets, *, online: bool = True, fixed_variance: bool = False
    ) -> dict[str, MetricValue]:
        """LiRA on ``target_model``'s forget vs non-member examples (``lira_auc``, ``_tpr_at_1pct_fpr``, ``_acc``)."""
        models = self._targets(target_model)
        try:
            base = self.base_phi()
        except Exception as e:  # a shadow failed to train (e.g. NaN loss)
            return _not_computed(LIRA_METRICS, f"training the LiRA shadow models failed: {type(e).__name__}: {e}")
        return self._attack("lira", models, base, base, online=online, fixed_variance=fixed_variance)

    def ulira(
        self,
        method: str | Method,
        target_model: Targets,
        *,
        params: Mapping[str, Any] | None = None,
        fixed_variance: bool = False,
        ulira_out: str = ULIRA_OUT_DEFAULT,
    ) -> dict[str, MetricValue]:
        """U-LiRA for ``method`` (name + ``params``, or an instance): ``ulira_auc``, ``_tpr_at_1pct_fpr``, ``_acc``.

        ``ulira_out`` picks the OUT side: ``"unlearned"`` (shadows that never trained on x, unlearned on their
        own forget sets) or ``"untouched"`` (the same shadows before unlearning); see the module docstring.
        """
        check_ulira_out(ulira_out)
        models = self._targets(target_model)
        m_obj = method if isinstance(method, Method) else create_method(method, **dict(params or {}))
        m_obj.validate_params()
        reason = m_obj.unsupported_reason(self.scenario.request)
        if reason is not None:
            return _not_computed(ULIRA_METRICS, reason)
        try:
            self.base_phi()
        except Exception as e:
            return _not_computed(ULIRA_METRICS, f"training the LiRA shadow models failed: {type(e).__name__}: {e}")
        try:
            unlearned = self.unlearned_phi(m_obj)
        except MetricUnavailable as e:
            return _not_computed(ULIRA_METRICS, str(e))
        out = unlearned if ulira_out == "unlearned" else self.base_phi()
        return self._attack("ulira", models, unlearned, out, online=True, fixed_variance=fixed_variance)

    def unlearned_phi(self, method: Method) -> np.ndarray:
        """``[M, 2k]`` φ of every shadow after unlearning its forget set with ``method`` (cached models).

        Raises:
            MetricUnavailable: unlearning a shadow failed (the reason names the shadow and the error).
        """
        unlearned = np.empty((self.n_shadows, len(self.scored)))
        for m in range(self.n_shadows):
            try:
                unlearned[m] = self.phi(self._unlearned_shadow(method, m))
            except Exception as e:  # a NaN loss, or the method rejecting the shadow's data
                raise MetricUnavailable(
                    f"unlearning shadow model {m} with {method.name} failed: {type(e).__name__}: {e}"
                ) from None
        return unlearned

    def _unlearned_shadow(self, method: Method, m: int) -> nn.Module:
        forget = self.forget_set(m)
        retain = np.setdiff1d(np.flatnonzero(self.keep[m]), forget)
        seed = _shadow_seed(self.seed, m)
        s = self.scenario
        key = {**self._base_key(m), "role": "ulira_shadow", "method": method.name, "params": method.get_params(),
               "forget": config_hash({"i": forget.tolist()})}  # fmt: skip

        def _train(model: nn.Module) -> dict[str, Any]:
            data = UnlearnData(
                request=s.request, num_classes=s.bundle.num_classes, in_shape=s.bundle.in_shape,
                _forget=Subset(self.pool, forget.tolist()), _retain=Subset(self.pool, retain.tolist()),
                _val=s.val if len(s.val_idx) else None, forget_classes=s.forget_classes,
                make_model=self.make_model, train_config=self.train_cfg, device=self.device, seed=seed,
            )  # fmt: skip
            out = method.unlearn(self.shadow(m), data)
            model.load_state_dict(out.state_dict())
            return {}

        return self._get_or_train(key, _train, seed)


def _concat(train: Dataset, train_idx: np.ndarray, other: Dataset, other_idx: np.ndarray) -> Dataset:
    """The pool dataset: ``train[train_idx]`` then ``other[other_idx]`` (in memory when both are)."""
    if isinstance(train, ArrayDataset) and isinstance(other, ArrayDataset):
        a, b = torch.as_tensor(train_idx), torch.as_tensor(other_idx)
        return ArrayDataset(torch.cat([train.x[a], other.x[b]]), torch.cat([train.y[a], other.y[b]]))
    return ConcatDataset([Subset(train, train_idx.tolist()), Subset(other, other_idx.tolist())])


def _on_bank(
    names: Sequence[str],
    bank: ShadowBank | None,
    attack: Callable[[ShadowBank], dict[str, MetricValue]],
    *build_args: Any,
    **build_kwargs: Any,
) -> dict[str, MetricValue]:
    """``attack(bank)``, the bank built by ``ShadowBank.build(*build_args, **build_kwargs)`` when none is given.

    When the shadows are unavailable (LiRA off, too few shadows, no non-members), every metric in ``names``
    is :class:`NotComputed` with the reason.
    """
    try:
        bank = bank or ShadowBank.build(*build_args, **build_kwargs)
    except MetricUnavailable as e:
        return _not_computed(names, str(e))
    return attack(bank)


def run_lira(
    scenario: Scenario,
    model_name: ModelFactory,
    train_cfg: TrainConfig,
    n_shadows: int,
    *,
    target_model: Targets,
    device: str | torch.device = "auto",
    seed: int | None = None,
    cache: ModelCache | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    nonmember_split: str = "auto",
    online: bool = True,
    fixed_variance: bool = False,
    bank: ShadowBank | None = None,
) -> dict[str, MetricValue]:
    """LiRA (online by default) on the audited model's forget examples vs held-out non-members.

    Args:
        scenario: the scenario (D, D_f and the non-member split).
        model_name: registered architecture of the audited model (shadows use the same), or a zero-argument
            factory of fresh models.
        train_cfg: the recipe the audited model's original was trained with.
        n_shadows: number of shadow models M (>= 4; 0 = off).
        target_model: the model under audit (or several, pooled).
        device: where to train and evaluate.
        seed: seeds the scored-example draw, the keep mask and every shadow (default: the scenario's).
        cache: where shadows are cached by config hash (``None``: in memory only).
        model_kwargs: passed to the model factory.
        nonmember_split: ``auto``, ``test``, ``val`` or ``forget_test`` (see the module docstring).
        online: the two-Gaussian test (True) or the OUT-only offline test.
        fixed_variance: one global σ (the reference code's option; better with few shadows).
        bank: a :class:`ShadowBank` already built for this scenario (reuses its shadows).

    Returns:
        ``lira_auc``, ``lira_tpr_at_1pct_fpr``, ``lira_acc`` -> float, or :class:`NotComputed` with the reason.
    """
    return _on_bank(
        LIRA_METRICS, bank, lambda b: b.lira(target_model, online=online, fixed_variance=fixed_variance),
        scenario, model_name, train_cfg, n_shadows, device=device, seed=seed, cache=cache,
        model_kwargs=model_kwargs, nonmember_split=nonmember_split,
    )  # fmt: skip


def run_ulira(
    scenario: Scenario,
    method_name: str,
    params: Mapping[str, Any] | None,
    model_name: ModelFactory,
    train_cfg: TrainConfig,
    n_shadows: int,
    *,
    target_model: Targets,
    device: str | torch.device = "auto",
    seed: int | None = None,
    cache: ModelCache | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    nonmember_split: str = "auto",
    fixed_variance: bool = False,
    ulira_out: str = ULIRA_OUT_DEFAULT,
    bank: ShadowBank | None = None,
) -> dict[str, MetricValue]:
    """U-LiRA: shadows unlearned with ``method_name(**params)``; scores ``target_model`` (that method's output).

    Arguments as in :func:`run_lira`, plus the audited method's registered name and hyperparameters, and
    ``ulira_out`` (``"unlearned"``: OUT from the unlearned shadows that never trained on x, as in the paper's
    game; ``"untouched"``: from the same shadows before unlearning).
    Unknown methods or invalid hyperparameters raise :class:`~unlearnkit.errors.UnlearnkitError` before
    any training.

    Returns:
        ``ulira_auc``, ``ulira_tpr_at_1pct_fpr``, ``ulira_acc`` -> float, or :class:`NotComputed`.
    """
    check_ulira_out(ulira_out)
    method = create_method(method_name, **dict(params or {}))
    method.validate_params()
    return _on_bank(
        ULIRA_METRICS, bank,
        lambda b: b.ulira(method, target_model, fixed_variance=fixed_variance, ulira_out=ulira_out),
        scenario, model_name, train_cfg, n_shadows, device=device, seed=seed, cache=cache,
        model_kwargs=model_kwargs, nonmember_split=nonmember_split,
    )  # fmt: skip


# -- the resources ----------------------------------------------------------------------------------------
# Key construction of the shadows on disk stays in ShadowBank (_base_key, pool_id); the in-memory key of the
# resources is the hash of the inputs named in depends_on (protocols._base.resource_key).

_BANK_INPUTS = ("scenario", "model", "train", "seed", "lira_shadows", "lira_nonmember_split")


def _bank(b: ResourceBuilder) -> ShadowBank:
    """The shadow bank of ``b``'s inputs, drawn but not trained (raises MetricUnavailable when off)."""
    i = b.inputs
    if not i.lira_shadows:
        raise MetricUnavailable("LiRA is off (lira_shadows = 0; set it >= 4)")
    train = i.require_recipe("LiRA's shadow models")
    return ShadowBank.build(
        i.scenario, i.model if i.model is not None else "", train, i.lira_shadows, device=i.device, seed=i.seed,
        cache=b.model_cache, model_kwargs=i.model_kwargs, nonmember_split=i.lira_nonmember_split,
    )  # fmt: skip


def _bank_parts(b: ResourceBuilder) -> int:
    return int(b.inputs.lira_shadows)


def _bank_part(b: ResourceBuilder, m: int) -> None:
    """Train untouched shadow ``m`` into the model cache (the Ray backend's shadow task)."""
    _bank(b).shadow(m)


@register_resource("shadow_bank", depends_on=_BANK_INPUTS, parts=_bank_parts, build_part=_bank_part, max_kept=1)
def shadow_bank(b: ResourceBuilder) -> ShadowBank:
    """LiRA's M shadow models of the scenario, trained (φ of the untouched shadows on the scored examples)."""
    bank = _bank(b)
    try:
        bank.base_phi()
    except Exception as e:  # a shadow failed to train (e.g. NaN loss)
        raise MetricUnavailable(f"training the LiRA shadow models failed: {type(e).__name__}: {e}") from None
    return bank


def _ulira_check(b: ResourceBuilder) -> str | None:
    i = b.inputs
    if i.method is None:
        return "U-LiRA audits an unlearning method; none was given (method=...)"
    if i.method in NO_METHOD_ROWS:
        return f"U-LiRA audits an unlearning method; the {i.method} row has none"
    if i.shots is not None:
        return "U-LiRA's shadows unlearn full forget sets, not k-shot ones"
    return None


@register_resource("unlearned_shadows", depends_on=(*_BANK_INPUTS, "method", "params"), check=_ulira_check, max_kept=2)
def unlearned_shadows(b: ResourceBuilder) -> np.ndarray:
    """U-LiRA: ``[M, 2k]`` φ of the shadows after unlearning with the audited method and hyperparameters."""
    i = b.inputs
    method = create_method(i.method or "", **i.params)
    method.validate_params()
    reason = method.unsupported_reason(i.scenario.request)
    if reason is not None:
        raise MetricUnavailable(reason)
    bank = b.get("shadow_bank")
    return bank.unlearned_phi(method)
