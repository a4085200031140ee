"""SISA: exact unlearning by Sharded, Isolated, Sliced and Aggregated training.

Bourtoule, Chandrasekaran, Choquette-Choo, Jia, Travers, Zhang, Lie, Papernot, "Machine Unlearning",
IEEE S&P 2021 (arXiv 1912.03817). Public code: ``cleverhans-lab/machine-unlearning`` (``sisa.py``,
``distribution.py``, ``aggregation.py``). Paraphrased, never copied.

**SISA's "original" is not the monolithic model.** D = D_r ∪ D_f is cut into S disjoint shards, each
shard into R disjoint slices; shard s trains its own model (same architecture and recipe as the
original, ``train_recipe``) incrementally: stage k trains on slices 0..k for e_k epochs, starting from
the checkpoint of stage k−1, and the checkpoint after each stage is kept. The deployed model is the
ensemble ("aggregation") of the S shard models: here the mean of their softmax outputs, returned as an
``nn.Module`` whose outputs are log(mean softmax), so its argmax and softmax are the ensemble's.

* Assignment (``distribution.py`` uses a uniform split): each training sample, identified by its index in
  the base dataset, gets a rank in a seeded permutation of the base's indices; shard = rank mod S, slice =
  (rank div S) mod R. A sample's place does not depend on which other samples are in D, so training on
  D \\ D_f from scratch puts every remaining sample where it was.
* Epochs per stage (``sisa.py``): with E the recipe's epochs, a = 2E/(R+1) and
  e_k = max(1, ⌊(k+1)a⌋ − ⌊ka⌋), so the sample-epochs of a shard total about E·|shard| (one ordinary
  training's worth) while later slices see fewer epochs. Each stage is a fresh optimizer and schedule.
* Randomness is fixed per (seed, shard) for the initial weights and per (seed, shard, stage) for batch
  order, so a retrained stage sees exactly what a from-scratch run on D_r would.

**Unlearning** (paper §IV): for each shard, find the first slice j holding a forget sample; restore the
checkpoint after stage j−1 (a fresh initialisation if j = 0) and retrain stages j..R−1 without D_f.
Unaffected shards are kept as they are. The result equals SISA trained from scratch on D_r.

**Train once.** The sharded training of D is done once per (data D, architecture and initial weights,
recipe, S, R, seed, device type) and cached in memory (class-level LRU), like WF-Net's α; it runs before
the unlearning clock starts, so ``time_s`` measures only the shard retraining. ``report_``:
``sisa_trained_now`` (1 if this call trained the shards), ``sisa_train_time_s`` (that one-off training),
``sisa_shards_retrained``, ``sisa_samples_retrained`` (distinct retain samples in retrained shards),
``sisa_sample_epochs_retrained`` and ``sisa_unlearn_cost_vs_full`` = sample-epochs retrained ÷ (|D_r|·E),
the sample-epochs full retraining costs (a compute proxy; 1 means no saving).

The output is not the original architecture (``preserves_architecture = False``); the model passed to
:meth:`unlearn` is not used. When D_f and D_r are not subsets of one base dataset, samples are identified
by their position in D_r followed by D_f (exactness still holds for this D, but the assignment then
depends on the split). Defaults S = 5, R = 4 [CHOICE: the paper sweeps S up to 20 on larger data].

SISA is not tuned (``search_space = {}``): it retrains shards exactly, and its shards/slices trade accuracy
for the cost of training, which the time constraint of a tuning would decide alone.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, Subset

from unlearnkit.engine import TrainConfig, train_model
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods._base import POSITIVE_INT, Method, UnlearnData, register_method


class SISAEnsemble(nn.Module):
    """The aggregate of the shard models: ``log(mean_s softmax(f_s(x)))``."""

    def __init__(self, shards: list[nn.Module]) -> None:
        super().__init__()
        self.shards = nn.ModuleList(shards)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).float().softmax(-1) for m in self.shards]).mean(0)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


def stage_epochs(epochs: int, slices: int) -> list[int]:
    """e_k for k = 0..slices−1: ``max(1, ⌊(k+1)a⌋ − ⌊ka⌋)`` with ``a = 2·epochs/(slices+1)``."""
    a = 2 * epochs / (slices + 1)
    return [max(1, int((k + 1) * a) - int(k * a)) for k in range(slices)]


def assign(ids: np.ndarray, id_space: int, shards: int, slices: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(shard, slice) of each sample id: its rank in a seeded permutation of ``range(id_space)``."""
    rank = np.empty(id_space, dtype=np.int64)
    rank[np.random.default_rng([seed, 0x515A]).permutation(id_space)] = np.arange(id_space)
    r = rank[ids]
    return r % shards, (r // shards) % slices


def _sub_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


@dataclass
class _Trained:
    """The sharded training of one D: per shard, the state after each stage (CPU)."""

    checkpoints: list[list[dict[str, torch.Tensor]]]
    train_time_s: float


def _union(forget: Dataset, retain: Dataset) -> tuple[Dataset, np.ndarray, np.ndarray, int, str]:
    """(base, ids of D, ids of D_f, id space, identity string) for D = D_f ∪ D_r."""

    def unwrap(ds: Dataset) -> tuple[Dataset, np.ndarray] | None:
        idx = None
        while isinstance(ds, Subset):
            sub = np.asarray(ds.indices, dtype=np.int64)
            idx = sub if idx is None else sub[idx]
            ds = ds.dataset
        return None if idx is None else (ds, idx)

    uf, ur = unwrap(forget), unwrap(retain)
    if uf is not None and ur is not None and uf[0] is ur[0]:
        base = uf[0]
        ids = np.unique(np.concatenate([uf[1], ur[1]]))
        h = hashlib.sha256(ids.tobytes())
        h.update(_content_digest(base).encode())
        return base, ids, np.unique(uf[1]), len(base), f"subset:{h.hexdigest()}"  # type: ignore[arg-type]
    base = ConcatDataset([retain, forget])
    n_r, n = len(retain), len(base)  # type: ignore[arg-type]
    from unlearnkit.engine import labels_of

    h = hashlib.sha256(f"{n_r}|{n}|".encode())
    h.update(labels_of(base).numpy().astype(np.int64).tobytes())
    return base, np.arange(n), np.arange(n_r, n), n, f"concat:{h.hexdigest()}"


def _content_digest(base: Dataset) -> str:
    from unlearnkit.data import ArrayDataset

    h = hashlib.sha256(f"{type(base).__qualname__}|{len(base)}|".encode())  # type: ignore[arg-type]
    if isinstance(base, ArrayDataset):
        for t in (base.x, base.y):
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _state_digest(model: nn.Module) -> str:
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@register_method("sisa")
class SISA(Method):
    """Sharded, sliced training; unlearning retrains only the affected shards from their last clean slice."""

    paper = 'Bourtoule et al., "Machine Unlearning", IEEE S&P 2021, arXiv:1912.03817'
    search_space = {}
    needs = frozenset({"forget", "retain", "train_recipe"})
    preserves_architecture: ClassVar[bool] = False
    _parameter_constraints = {"shards": [POSITIVE_INT], "slices": [POSITIVE_INT]}

    #: trained shards by key (see :meth:`_key`); a small LRU so long sweeps do not grow without bound
    _CACHE: ClassVar[OrderedDict[str, _Trained]] = OrderedDict()
    _CACHE_SIZE: ClassVar[int] = 4

    def __init__(self, *, shards: int = 5, slices: int = 4) -> None:
        self.shards = shards
        self.slices = slices

    @classmethod
    def clear_cache(cls) -> None:
        """Forget every cached sharded training."""
        cls._CACHE.clear()

    # -- the verb: train (or fetch) the shards first, so the clock measures only unlearning ---------------
    def unlearn(self, model: nn.Module, data: UnlearnData) -> nn.Module:
        """Train SISA on D (cached), then time the retraining of the shards D_f touches."""
        self.validate_params()
        self.check_data(data)
        self._prepared = self._trained(data)
        try:
            return super().unlearn(model, data)
        finally:
            del self._prepared

    def _unlearn(self, model: nn.Module, data: UnlearnData, generator: torch.Generator) -> nn.Module:
        trained, trained_now, base, ids, forget_ids, assignment = self._prepared
        shard_of, slice_of = assignment
        forget_set = set(forget_ids.tolist())
        keep = np.array([i not in forget_set for i in ids.tolist()], dtype=bool)
        epochs = stage_epochs(data.train_config.epochs, self.slices)  # type: ignore[union-attr]
        models, retrained, samples, sample_epochs = [], 0, 0, 0
        for s in range(self.shards):
            in_shard = shard_of == s
            hit = slice_of[in_shard & ~keep]
            if hit.size == 0:  # untouched shard: its final checkpoint as it is
                models.append(self._load(data, trained.checkpoints[s][-1]))
                continue
            first = int(hit.min())  # first slice holding a forget sample
            net = self._init(data, s) if first == 0 else self._load(data, trained.checkpoints[s][first - 1])
            for k in range(first, self.slices):
                part = ids[in_shard & keep & (slice_of <= k)]
                self._train_stage(net, base, part, epochs[k], data, s, k)
                sample_epochs += len(part) * epochs[k]
            models.append(net.eval())
            retrained += 1
            samples += int((in_shard & keep).sum())
        full = len(data.retain) * data.train_config.epochs  # type: ignore[union-attr]
        self.report_ = {
            "sisa_trained_now": int(trained_now), "sisa_train_time_s": trained.train_time_s,
            "sisa_shards_retrained": retrained, "sisa_samples_retrained": samples,
            "sisa_sample_epochs_retrained": sample_epochs,
            "sisa_unlearn_cost_vs_full": sample_epochs / full if full else 0.0,
        }  # fmt: skip
        return SISAEnsemble(models).to(data.device)

    # -- sharded training ----------------------------------------------------------------------------------
    def _trained(self, data: UnlearnData) -> tuple:
        base, ids, forget_ids, space, ident = _union(data.forget, data.retain)
        shard_of, slice_of = assign(ids, space, self.shards, self.slices, data.seed)
        empty = [s for s in range(self.shards) if not (shard_of == s).any()]
        if empty:
            raise UnlearnkitError(
                f"method 'sisa': shard {empty[0]} has no training sample ({len(ids)} samples for {self.shards} shards)"
            )
        key = self._key(data, ident)
        trained = self._CACHE.get(key)
        trained_now = trained is None
        if trained is None:
            t0 = time.perf_counter()
            epochs = stage_epochs(data.train_config.epochs, self.slices)  # type: ignore[union-attr]
            checkpoints = []
            for s in range(self.shards):
                net, states = self._init(data, s), []
                for k in range(self.slices):
                    self._train_stage(net, base, ids[(shard_of == s) & (slice_of <= k)], epochs[k], data, s, k)
                    states.append({n: t.detach().cpu().clone() for n, t in net.state_dict().items()})
                checkpoints.append(states)
            trained = _Trained(checkpoints, time.perf_counter() - t0)
            self._CACHE[key] = trained
            while len(self._CACHE) > self._CACHE_SIZE:
                self._CACHE.popitem(last=False)
        else:
            self._CACHE.move_to_end(key)
        return trained, trained_now, base, ids, forget_ids, (shard_of, slice_of)

    def _init(self, data: UnlearnData, shard: int) -> nn.Module:
        """Shard ``shard``'s initial model, drawn from a seed fixed by (seed, shard)."""
        make: Callable[[], nn.Module] = data.make_model  # type: ignore[assignment]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_sub_seed(data.seed, shard))
            return make().to(data.device)

    def _load(self, data: UnlearnData, state: dict[str, torch.Tensor]) -> nn.Module:
        net = self._init(data, 0)
        net.load_state_dict(state)
        return net.eval()

    def _train_stage(
        self, net: nn.Module, base: Dataset, part: np.ndarray, epochs: int, data: UnlearnData, shard: int, stage: int
    ) -> None:
        """Train ``net`` on ``base[part]`` for ``epochs`` epochs (fresh optimizer; batch order fixed by the stage)."""
        cfg = TrainConfig(**{**data.train_config.to_dict(), "epochs": epochs})  # type: ignore[union-attr]
        gen = torch.Generator().manual_seed(_sub_seed(data.seed, shard, stage, 1))
        train_model(net, Subset(base, part.tolist()), cfg, device=data.device, generator=gen,
                    where=f"sisa (shard {shard}, slice {stage})")  # fmt: skip

    def _key(self, data: UnlearnData, ident: str) -> str:
        probe = self._init(data, 0)  # architecture and initial weights (the factory may change them)
        h = hashlib.sha256(_state_digest(probe).encode())
        recipe = data.train_config.to_dict()  # type: ignore[union-attr]
        what = [self.get_params(), recipe, data.seed, data.device.type, data.num_classes, ident]
        h.update(json.dumps(what, sort_keys=True, default=str).encode())
        return h.hexdigest()
