"""The ensembles of the NeurIPS-2023 ε score: the ``reference_ensemble`` and ``unlearned_ensemble`` resources.

Reference: Triantafillou et al., "Are we making progress in unlearning? Findings from the first NeurIPS
unlearning competition", arXiv 2406.09073; the published scorer ``google-deepmind/unlearning_evaluation``
(``main.py``, ``metric.py``). Evaluation spec §1.1, §1.5–1.8. The scorer itself
(:func:`~unlearnkit.metrics.forget_quality`) is in ``metrics/forget_quality.py`` and the registered figures
in ``metrics/epsilon_score.py``; this module trains (and unlearns) the models they compare.

**What is compared** (as ``main.py`` does, N models per side):

* **Retrained ensemble R**: N models trained from scratch on D_r, member i with seed
  ``scenario.seed·10⁶ + i`` (init and data order; :func:`~unlearnkit.engine.ensemble.train_ensemble`).
* **Unlearned ensemble U**: the method run N times, run i with its own seed
  ``scenario.seed·10⁶ + 20 000 + i`` (the method's generator). By default (``originals="shared"``) every
  run starts from **one** original model, the runner's (trained on D with the scenario's seed): the
  published scorer unlearns the same ``original_model.pth`` N times. So a method that adds no
  run-to-run variance of its own cannot look like retraining, whose N models differ by init and data
  order; and the original model itself (the pseudo-method ``"original"``) is N copies of one model, a
  zero-width sample, and scores F = 0 through the peakiness check. ``originals="per_seed"`` instead
  unlearns N originals (seeds ``… + 30 000 + i``), one per run. That is not the published set-up: the
  originals' own spread then reaches the unlearned side, which makes a retraining-like spread easier to
  fake, and it costs N more trainings.
* For ``"retrain"`` the unlearned ensemble is trained from scratch on D_r with the run seeds, which is
  what the ``retrain`` method does per run (same init and data order) with the batched trainer.

φ is :func:`~unlearnkit.metrics.logit_scaled_confidence` on the forget set in its stored order, giving
[N, |S|] matrices; F = :func:`~unlearnkit.metrics.forget_quality`; the final score is
:func:`~unlearnkit.metrics.final_score` with the mean per-model accuracies on D_r (RA) and the test set (TA),
as fractions.

**The ceiling** (``forget_quality_ceiling``): an *independent* retrained ensemble C (seeds
``… + 10 000 + i``) scored against R with the same N; ``final_score_ceiling`` uses C's accuracies. It is
what a perfect unlearner scores at this N, and it is far below 1: the strongest of ~160k threshold rules
per example picks up chance differences between two samples of one distribution (spec §1.8: ≈ 0.2 at N =
512). It is not monotone in N. Rates are multiples of 1/N, so the largest finite ε is ln((1−δ−1/N)·N) ≈
ln(N−1): below 2 for N ≤ 8, so there every example that is neither peaky nor perfectly separated scores at
least 2^−3 (2^−2 for N = 4) and F has that floor besides its 0s; at N = 32 (ε up to 3.4) chance count
ratios such as 1 vs 5 of 32 models give ε = ln 27 ≈ 3.3, so the mean ε is higher (1.9 on digits) than in the
spec's N = 512 simulation (≈ 1.5). Measured on digits ``random:0.1`` (mlp, default recipe, 30 epochs):
0.19 at N = 8, 0.11 at N = 32. Read a method's F against the ceiling, never against 1. The
``retrain`` row's F is a second, independent draw of the same statistic, so its distance from the ceiling
shows how noisy F is at this N.

**Which requests.** Sample-level requests (``random``, ``indices``) and requests that keep every label in
training (``subclass``, ``group``: the challenge itself forgot whole identities). A ``class`` request is
refused (``not computed``): every forget example's true label is a class no retrained model ever saw, so φ
measures how confidently a model rejects the class, not whether it behaves like retraining per example,
which is what the score was built for; use the class-level metrics there.

**Not computed.** N < 2 (the score needs two models per side), a class request, a method that does not
apply or fails on any run, or reference training that fails: the affected keys carry
``"not computed: <reason>"`` (the method's failure leaves the ceiling and the retrained accuracies intact).
A model given as a factory callable (not a registered name) is never cached on disk.
"""

from __future__ import annotations

import functools
import itertools
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from unlearnkit.engine import TrainConfig, compute_context, config_hash, resolve_device
from unlearnkit.engine.ensemble import EnsembleCache, Mode, ensemble_path, iter_ensemble
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import METHODS, Method, UnlearnData, create_method
from unlearnkit.metrics import MetricUnavailable, evaluate, value_to_json
from unlearnkit.metrics.epsilon_score import KEYS, MemberStats, member_stats
from unlearnkit.metrics.forget_quality import forget_quality
from unlearnkit.protocols._base import ModelFactory, ResourceBuilder, ResourceInputs, register_resource
from unlearnkit.scenario import Scenario

#: seeds of the scenario with seed s: ``s * SEED_STRIDE + offset + i`` for member i
SEED_STRIDE = 1_000_000
CEILING_OFFSET = 10_000  # the independent retrained ensemble of the ceiling
UNLEARN_OFFSET = 20_000  # the N unlearning runs (and the retrain method's N models)
ORIGINALS_OFFSET = 30_000  # per-seed originals (originals="per_seed")
MAX_MODELS = 10_000  # the offsets above keep the four families apart up to this N

#: the pseudo-method of the model before unlearning (the runner's row name)
ORIGINAL = "original"
#: the pseudo-method of given checkpoints (the runner's audit rows)
AUDIT = "audit"

Value = float | str  # a number, or "not computed: <reason>"


def ensemble_seeds(scenario_seed: int, n: int, offset: int = 0) -> list[int]:
    """Seeds of an ensemble family: ``scenario_seed * 10**6 + offset + i`` for i < n."""
    return [scenario_seed * SEED_STRIDE + offset + i for i in range(n)]


# ---------------------------------------------------------------------------------------------------
# Ensembles of a scenario
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Setup:
    """Everything fixed for one (scenario, model, recipe): builds, trains and summarises members."""

    scenario: Scenario
    model_name: str
    model_kwargs: dict[str, Any]
    train_cfg: TrainConfig
    device: torch.device
    cache: EnsembleCache
    batch_models: int
    mode: Mode
    on_epoch: Callable[[int, int, float], None] | None
    factory: Callable[[], nn.Module] | None = None  # builds the model (default: the registered ``model_name``)
    disk: bool = True  # False: members are never written (a factory callable has no stable key)

    @classmethod
    def of(cls, b: ResourceBuilder) -> _Setup:
        """The setup of a builder's inputs."""
        i = b.inputs
        train = i.require_recipe("the ε score's ensembles")
        mode: Any = i.ensemble_mode
        return cls(i.scenario, i.model_name, dict(i.model_kwargs), train, i.device, b.ensemble_cache,
                   i.ensemble_batch_models, mode, i.on_epoch, i.make_model, b.disk)  # fmt: skip

    def make_model(self) -> nn.Module:
        """A fresh member."""
        if self.factory is not None:
            return self.factory()
        from unlearnkit.models import create_model

        b = self.scenario.bundle
        return create_model(self.model_name, b.num_classes, b.in_shape, **self.model_kwargs)

    @property
    def disk_cache(self) -> EnsembleCache | None:
        """Where members are stored (``None``: not on disk)."""
        return self.cache if self.disk else None

    def key(self, split: str) -> dict[str, Any]:
        """Cache key of models trained on ``split`` ("train" = D, "retain" = D_r), without recipe and seed:
        data and architecture fingerprints, split indices, and the compute context of this process."""
        s, b = self.scenario, self.scenario.bundle
        compute = compute_context(self.device, threads=torch.get_num_threads(), deterministic=True,
                                  amp=self.train_cfg.amp)  # fmt: skip
        return {
            "ensemble": "forget_quality", "dataset": b.name, "n_train": len(b.train_targets), "data": b.fingerprint(),
            "model": self.model_name, "model_kwargs": self.model_kwargs, "split": split,
            "arch": self._arch(),
            "idx": config_hash({"i": s.split_indices(split).tolist()}), "compute": compute, "path": self.path,
        }  # fmt: skip

    @functools.cached_property
    def path(self) -> str:
        """The training path ``mode`` resolves to here (:func:`~unlearnkit.engine.ensemble.ensemble_path`); also
        added by the trainer to each member's key, so members of different paths are never mixed."""
        return ensemble_path(self.mode, self.make_model, self.scenario.retain, self.device)

    def _arch(self) -> str:
        """Architecture fingerprint: of the registered model, or of what a user factory builds."""
        from unlearnkit.models import factory_fingerprint

        b = self.scenario.bundle
        return factory_fingerprint(self.factory or self.model_name, b.num_classes, b.in_shape, **self.model_kwargs)

    def memo_key(self, split: str, seed: int) -> str:
        member = self.cache.member_hash(self.key(split), self.train_cfg, seed)
        return f"stats/{member}/{self.scenario.splits_hash()}"

    def trained_stats(self, split: str, seeds: Sequence[int]) -> list[MemberStats]:
        """Stats of the members trained on ``split`` with ``seeds`` (trained, batched, only if not cached)."""
        memo = self.cache.memo
        need = [s for s in seeds if self.memo_key(split, s) not in memo]
        if need:
            members = iter_ensemble(
                self.make_model, self.scenario.split(split), self.train_cfg, need, device=self.device,
                batch_models=self.batch_models, mode=self.mode, cache=self.disk_cache, key=self.key(split),
                on_epoch=self.on_epoch, where=f"training the {split} ensemble",
            )  # fmt: skip
            for s, model in members:
                memo[self.memo_key(split, s)] = member_stats(model, self.scenario, self.device)
        return [memo[self.memo_key(split, s)] for s in seeds]

    def original(self) -> nn.Module:
        """The runner's original model: trained on D with the scenario's seed, by the plain loop."""
        seed = self.scenario.seed
        members = iter_ensemble(self.make_model, self.scenario.train, self.train_cfg, [seed], device=self.device,
                                mode="loop", cache=self.disk_cache, key=self.key("train"), on_epoch=self.on_epoch,
                                where="training the original model")  # fmt: skip
        return next(iter(members))[1]


def unlearn_ensemble(
    method: Any,
    originals: nn.Module | Iterable[nn.Module],
    data_for_seed: Callable[[int], Any],
    seeds: Sequence[int],
) -> Iterator[tuple[int, nn.Module]]:
    """Run ``method`` once per seed and yield ``(seed, unlearned model)``, one run at a time.

    Args:
        method: a :class:`~unlearnkit.methods.Method` (``method.unlearn(model, data)``; the input is never
            modified).
        originals: one model every run starts from (the published scorer's set-up), or one per seed (any
            iterable, consumed lazily, so N originals need not be in memory at once).
        data_for_seed: the :class:`~unlearnkit.methods.UnlearnData` of the run with that seed (its ``seed``
            seeds the method's generator).
        seeds: one per run.

    Raises:
        UnlearnkitError: ``originals`` is a sequence of another length than ``seeds``.
    """
    if isinstance(originals, nn.Module):
        starts: Iterable[nn.Module] = itertools.repeat(originals, len(seeds))
    else:
        if isinstance(originals, Sequence) and len(originals) != len(seeds):
            raise UnlearnkitError(f"{len(originals)} original models for {len(seeds)} unlearning seeds")
        starts = originals
    return ((s, method.unlearn(start, data_for_seed(s))) for s, start in zip(seeds, starts, strict=True))


# ---------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------


def _check_n(n_models: Any) -> str | None:
    """Why ``n_models`` cannot give a score (None if it can); bad values raise."""
    if isinstance(n_models, bool) or not isinstance(n_models, int) or n_models < 0:
        raise UnlearnkitError(f"ensemble_n must be an integer >= 0, got {n_models!r}")
    if n_models > MAX_MODELS:
        raise UnlearnkitError(f"ensemble_n must be <= {MAX_MODELS}, got {n_models}")
    if n_models == 0:
        return "the ε score is off (ensemble_n = 0; set it >= 2)"
    if n_models == 1:
        return "ensemble_n = 1: the ε score needs at least 2 models per side"
    return None


def request_unsupported_reason(scenario: Scenario) -> str | None:
    """Why the ε score is not computed for this scenario's request (``None`` if it is)."""
    if scenario.request.kind == "class":
        return (
            f"the ε score is defined for sample-level requests, not {scenario.request} "
            "(no retrained model ever predicts a forgotten class)"
        )
    return None


@dataclass(frozen=True)
class ReferenceEnsembles:
    """The retrained ensemble R, the independent one C, and C's F against R (the ceiling).

    The value of the ``reference_ensemble`` resource.
    """

    retrained: list[MemberStats]
    ceiling: list[MemberStats]
    ceiling_f: float


def _failure(what: str, e: Exception) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{where}"


def _references(setup: _Setup, n: int) -> ReferenceEnsembles | str:
    """R, C and the ceiling F (memoised: the same for every method), or why they could not be trained."""
    r_seeds = ensemble_seeds(setup.scenario.seed, n)
    c_seeds = ensemble_seeds(setup.scenario.seed, n, CEILING_OFFSET)
    try:
        retrained = setup.trained_stats("retain", r_seeds)
        ceiling = setup.trained_stats("retain", c_seeds)
    except (UnlearnkitError, KeyboardInterrupt):
        raise
    except Exception as e:  # NaN loss or another failure of reference training
        return _failure("reference ensemble training failed", e)
    members = [setup.memo_key("retain", s) for s in r_seeds + c_seeds]
    key = "ceiling/" + config_hash({"members": members})
    if key not in setup.cache.memo:
        setup.cache.memo[key] = forget_quality(
            np.stack([m.phi for m in ceiling]), np.stack([m.phi for m in retrained])
        ).F
    return ReferenceEnsembles(retrained, ceiling, setup.cache.memo[key])


# -- the resources ----------------------------------------------------------------------------------------


def _given_count(inputs: ResourceInputs) -> int | None:
    given = inputs.unlearned_models
    return len(given) if isinstance(given, Sequence) else None


def _method(inputs: ResourceInputs) -> Method | None:
    """The audited method, instantiated and validated (``None`` for the original row or given models)."""
    if inputs.unlearned_models is not None or inputs.method in (None, ORIGINAL, AUDIT):
        return None
    return create_method(inputs.method, **inputs.params)


def _ensemble_check(b: ResourceBuilder) -> str | None:
    """Why the ε score does not apply to these inputs (checked before any training; bad input raises)."""
    i = b.inputs
    if i.ensemble_originals not in ("shared", "per_seed"):
        raise UnlearnkitError(f"originals must be 'shared' or 'per_seed', got {i.ensemble_originals!r}")
    why = _check_n(i.ensemble_n)
    n_given = _given_count(i)
    if i.ensemble_n != 0 and n_given is not None and n_given < 2:
        why = f"{n_given} model given: the ε score needs at least 2 unlearned models (N checkpoints of N runs)"
    method = None
    if i.method not in (None, ORIGINAL, AUDIT) and i.unlearned_models is None:
        setting = METHODS.get(i.method).setting  # unknown names raise
        if setting != 1:  # few-shot / concept methods (their run params include e.g. "shots")
            why = why or f"method {i.method!r} is a setting-{setting} method; only setting-1 methods are ensembled"
        else:
            method = _method(i)
            method.validate_params()  # type: ignore[union-attr]
    why = why or request_unsupported_reason(i.scenario)
    if why is None and method is not None:
        why = method.unsupported_reason(i.scenario.request)
    return why


@register_resource("reference_ensemble", depends_on=("scenario", "model", "train", "seed", "ensemble_n"),
                   check=_ensemble_check)  # fmt: skip
def reference_ensemble(b: ResourceBuilder) -> ReferenceEnsembles:
    """N models retrained on D_r, an independent ensemble of N more, and the ceiling F (the ε score's references)."""
    refs = _references(_Setup.of(b), b.inputs.ensemble_n)
    if isinstance(refs, str):
        raise MetricUnavailable(refs)
    return refs


def _unlearned_key(inputs: ResourceInputs) -> tuple[str, ...]:
    """Given models are the unlearned side whatever the row's method (an audit set: one key for its rows)."""
    common = ("scenario", "model", "train", "seed", "ensemble_n")
    if inputs.unlearned_models is not None:
        return (*common, "unlearned_models")
    return (*common, "ensemble_originals", "method", "params", "original")


@register_resource("unlearned_ensemble", depends_on=_unlearned_key, check=_ensemble_check, max_kept=1)
def unlearned_ensemble(b: ResourceBuilder) -> list[MemberStats]:
    """The N unlearned models' figures: the method run N times (from the shared original), or the given models."""
    b.get("reference_ensemble")  # trained first: a failure there is every ε figure's reason
    i = b.inputs
    setup = _Setup.of(b)
    n, dev, scenario = i.ensemble_n, i.device, i.scenario
    if i.unlearned_models is not None:
        given = i.unlearned_models() if callable(i.unlearned_models) else i.unlearned_models
        return [member_stats(m, scenario, dev) for m in given]
    if i.method is None:
        raise MetricUnavailable(
            "the ε score needs N unlearned models (unlearned_models=[...]) or a method to run N times (method=...)"
        )
    method = _method(i)
    run_seeds = ensemble_seeds(scenario.seed, n, UNLEARN_OFFSET)
    try:
        if i.method == "retrain":  # the retrain method, run per seed, batched
            return setup.trained_stats("retain", run_seeds)
        if i.ensemble_originals == "per_seed":
            starts = ensemble_seeds(scenario.seed, n, ORIGINALS_OFFSET)
            if method is None:
                return setup.trained_stats("train", starts)
            members = iter_ensemble(setup.make_model, scenario.train, setup.train_cfg, starts, device=dev,
                                    batch_models=setup.batch_models, mode=setup.mode, cache=setup.disk_cache,
                                    key=setup.key("train"), on_epoch=setup.on_epoch)  # fmt: skip
            return _unlearned_stats(method, _originals(members), setup, run_seeds)
        start = i.original if i.original is not None else setup.original()
        if method is None:  # N copies of one model: a zero-width sample
            return [member_stats(start, scenario, dev)] * n
        return _unlearned_stats(method, start, setup, run_seeds)
    except (UnlearnkitError, KeyboardInterrupt, MetricUnavailable):  # MetricUnavailable: e.g. a non-finite member
        raise
    except (_MethodFailed, _OriginalsFailed) as e:
        raise MetricUnavailable(str(e)) from None
    except Exception as e:  # training the original model(s) failed
        raise MetricUnavailable(_failure("original model training failed", e)) from None


class _MethodFailed(Exception):
    """A run of the method failed; the message is the not-computed reason."""


class _OriginalsFailed(Exception):
    """Training a per-seed original failed; the message is the not-computed reason."""


def _originals(members: Iterable[tuple[int, nn.Module]]) -> Iterator[nn.Module]:
    """The models of ``members``, with a training failure told apart from the method's."""
    try:
        for _, model in members:
            yield model
    except (KeyboardInterrupt, UnlearnkitError):
        raise
    except Exception as e:
        raise _OriginalsFailed(_failure("original model training failed", e)) from e


def _unlearned_stats(
    method: Any, originals: nn.Module | Iterable[nn.Module], setup: _Setup, seeds: list[int]
) -> list[MemberStats]:
    def data_for(seed: int) -> Any:
        return UnlearnData.from_scenario(setup.scenario, make_model=setup.make_model, train_config=setup.train_cfg,
                                         device=setup.device, seed=seed, on_epoch=setup.on_epoch)  # fmt: skip

    out = []
    runs = iter(unlearn_ensemble(method, originals, data_for, seeds))
    for i, seed in enumerate(seeds):
        try:
            _, model = next(runs)
        except (KeyboardInterrupt, UnlearnkitError, _OriginalsFailed):
            raise
        except Exception as e:
            raise _MethodFailed(_failure(f"method {method.name!r} failed on ensemble run {i} (seed {seed})", e)) from e
        out.append(member_stats(model, setup.scenario, setup.device))
    return out


# -- the whole score in one call --------------------------------------------------------------------------


def _score(builder: ResourceBuilder) -> dict[str, Value]:
    """Every key of :data:`~unlearnkit.metrics.epsilon_score.KEYS` through the registered metrics."""
    # the ε figures read only the resources, never the evaluated model
    out = evaluate(nn.Identity(), builder.inputs.scenario, metrics=KEYS, resources=builder,
                   device=builder.inputs.device)  # fmt: skip
    return {k: value_to_json(v) for k, v in out.items()}


def forget_quality_eval(
    scenario: Scenario,
    method_name: str,
    params: dict[str, Any] | None,
    model_name: ModelFactory,
    train_cfg: TrainConfig,
    n_models: int,
    *,
    device: str | torch.device = "auto",
    cache: EnsembleCache | None = None,
    model_kwargs: dict[str, Any] | None = None,
    original: nn.Module | None = None,
    originals: Literal["shared", "per_seed"] = "shared",
    batch_models: int = 16,
    mode: Mode = "auto",
    on_epoch: Callable[[int, int, float], None] | None = None,
) -> dict[str, Value]:
    """F, the final score and their ceilings for ``method_name`` on ``scenario`` with N models per side.

    Args:
        scenario: the scenario (its forget set is S).
        method_name: a registered method, or ``"original"`` (the model before unlearning).
        params: the method's hyperparameters (as stored with the run; ``None`` = defaults).
        model_name: registered model of the ensembles (the run's model), or a zero-argument factory.
        train_cfg: recipe of every trained model (the run's ``train`` section).
        n_models: N, models per side (0 = off; 1 gives not-computed values).
        device: where to train and evaluate.
        cache: where ensemble members are stored (default ``$UNLEARNKIT_CACHE/ensembles``); pass the same
            object for every method of a run so the reference figures are computed once.
        model_kwargs: passed to the model factory.
        original: the runner's original model (trained on D with the scenario's seed); trained and
            cached here when not given. Used with ``originals="shared"``.
        originals: ``"shared"`` (every unlearning run starts from ``original``, as published) or
            ``"per_seed"`` (from N originals, one per run).
        batch_models, mode: see :func:`~unlearnkit.engine.ensemble.train_ensemble`.
        on_epoch: progress callback of every training.

    Returns:
        Every name in :data:`~unlearnkit.metrics.epsilon_score.KEYS` mapped to a float, or to
        ``"not computed: <reason>"``.

    Raises:
        UnlearnkitError: bad input (N, unknown method or hyperparameter, unknown ``originals``).
    """
    inputs = ResourceInputs(
        scenario, model=model_name, model_kwargs=dict(model_kwargs or {}), train=train_cfg, device=device,
        method=method_name, params=dict(params or {}), original=original, ensemble_n=n_models,
        ensemble_originals=originals, ensemble_batch_models=batch_models, ensemble_mode=mode, on_epoch=on_epoch,
    )  # fmt: skip
    return _score(ResourceBuilder(inputs, ensemble_cache=cache or EnsembleCache()))


def forget_quality_of_models(
    scenario: Scenario,
    models: Sequence[nn.Module],
    model_name: ModelFactory,
    train_cfg: TrainConfig,
    *,
    device: str | torch.device = "auto",
    cache: EnsembleCache | None = None,
    model_kwargs: dict[str, Any] | None = None,
    batch_models: int = 16,
    mode: Mode = "auto",
    on_epoch: Callable[[int, int, float], None] | None = None,
) -> dict[str, Value]:
    """The same figures for given unlearned models (e.g. checkpoints made outside unlearnkit; ``audit``).

    N = ``len(models)``; the retrained and ceiling ensembles are trained (or loaded) with that N, using
    ``model_name`` and ``train_cfg`` as the scenario's reference recipe.
    """
    models = list(models)
    inputs = ResourceInputs(
        scenario, model=model_name, model_kwargs=dict(model_kwargs or {}), train=train_cfg,
        device=resolve_device(device), unlearned_models=models, ensemble_n=max(len(models), 2),
        ensemble_batch_models=batch_models, ensemble_mode=mode, on_epoch=on_epoch,
    )  # fmt: skip
    return _score(ResourceBuilder(inputs, ensemble_cache=cache or EnsembleCache()))
