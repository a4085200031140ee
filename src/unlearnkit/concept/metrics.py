"""Registered concept (setting-3) metrics: retrieval recalls, unsafe rates, zero-shot accuracy.

Each is registered in the one metric registry (:data:`unlearnkit.metrics.METRICS`) with
``modality="clip"`` (setting 3); its ``fn`` reads a :class:`ConceptEvalContext` instead of the classifier
:class:`~unlearnkit.metrics.EvalContext`. The figures come from the pure functions of
:mod:`unlearnkit.concept.retrieval`; the four test embeddings (s, v, u, g) are computed once per model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from unlearnkit.concept import lorentz
from unlearnkit.concept._data import ConceptData, ImageColumn
from unlearnkit.concept.clip import encode_images, encode_texts
from unlearnkit.concept.meru import LorentzCLIP, lorentz_images, lorentz_texts
from unlearnkit.concept.retrieval import (
    KS,
    concept_retrieval,
    cosine_similarity,
    lorentz_zero_shot_accuracy,
    zero_shot_accuracy,
)
from unlearnkit.errors import UnlearnkitError
from unlearnkit.metrics import MetricUnavailable, NotComputed, register_metric, select_metrics
from unlearnkit.metrics._base import ResourceProvider
from unlearnkit.protocols import RESOURCES


@dataclass
class ConceptEvalContext:
    """A model and the test quadruplets it is evaluated on; embeddings are computed once and cached.

    ``resources`` builds what a metric ``needs`` beyond the model (e.g. the generation analogue's models).
    """

    model: nn.Module
    data: ConceptData
    batch_size: int = 256
    #: the row's resource builder (e.g. the relearning attack); ``None``: metrics that need one are not computed
    resources: ResourceProvider | None = None
    _cache: dict[str, object] = field(default_factory=dict)

    def resource(self, name: str) -> Any:
        """The built resource ``name``; raises :class:`MetricUnavailable` with the reason."""
        if self.resources is None:
            raise MetricUnavailable(f"needs the {name.replace('_', ' ')}, which the runner's resource builder provides")
        return self.resources.get(name)

    @property
    def hyperbolic(self) -> bool:
        """Whether the model is a hyperbolic (MERU/HySAC) CLIP: embeddings on the hyperboloid, scored by
        minus the geodesic distance."""
        return isinstance(self.model, LorentzCLIP)

    def curvature(self) -> float:
        """c of a hyperbolic model (its curvature is −c)."""
        if not isinstance(self.model, LorentzCLIP):
            raise MetricUnavailable("a Euclidean CLIP has no curvature")
        return float(self.model.curvature().detach())

    def encode(self, texts: list[str] | None = None, images: ImageColumn | None = None) -> torch.Tensor:
        """Embeddings of ``texts`` or ``images``: L2-normalised (Euclidean CLIP) or space components on the
        hyperboloid (hyperbolic CLIP)."""
        tok, bs = self.data.tokenizer, self.batch_size
        if isinstance(self.model, LorentzCLIP):
            if texts is not None:
                return lorentz_texts(self.model, tok, texts, batch_size=bs)
            return lorentz_images(self.model, images, batch_size=bs)  # type: ignore[arg-type]
        if texts is not None:
            return encode_texts(self.model, tok, texts, batch_size=bs)
        return encode_images(self.model, images, batch_size=bs)  # type: ignore[arg-type]

    def similarity(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Pairwise scores of the model's geometry: cosine, or minus the geodesic distance."""
        if isinstance(self.model, LorentzCLIP):
            c = self.curvature()
            return lambda a, b: -lorentz.pairwise_dist(a.double(), b.double(), c)
        return cosine_similarity

    def embeddings(self) -> dict[str, torch.Tensor]:
        """Test embeddings ``{"s", "v", "u", "g"}`` (each ``[N, D]``; see :meth:`encode`)."""
        if "emb" not in self._cache:
            q = self.data.test
            self._cache["emb"] = {
                "s": self.encode(texts=q.safe_text), "v": self.encode(images=q.safe_image),
                "u": self.encode(texts=q.unsafe_text), "g": self.encode(images=q.unsafe_image),
            }  # fmt: skip
        return self._cache["emb"]  # type: ignore[return-value]

    def retrieval(self) -> dict[str, float]:
        """Every figure of :func:`~unlearnkit.concept.retrieval.concept_retrieval` (cached)."""
        if "ret" not in self._cache:
            e = self.embeddings()
            self._cache["ret"] = concept_retrieval(e["s"], e["v"], e["u"], e["g"], KS, similarity=self.similarity())
        return self._cache["ret"]  # type: ignore[return-value]


def _register(name: str, fn: Callable[[ConceptEvalContext], float], higher: bool | None, desc: str,
              needs: Iterable[str] = ()) -> None:  # fmt: skip
    register_metric(name, higher_is_better=higher, needs=needs, description=desc, modality="clip")(fn)


def _retrieval_metric(key: str) -> Callable[[ConceptEvalContext], float]:
    return lambda ctx: ctx.retrieval()[key]


_TASKS = {
    "t2v": "safe text → safe images",
    "v2t": "safe image → safe texts",
    "tstar_to_v_union": "unsafe text → safe ∪ unsafe images, hit = safe twin",
    "vstar_to_t_union": "unsafe image → safe ∪ unsafe texts, hit = safe twin",
}
for _task, _what in _TASKS.items():
    for _k in KS:
        _register(f"{_task}_r{_k}", _retrieval_metric(f"{_task}_r{_k}"), True, f"R@{_k}, {_what}")
_register("unsafe_rate_tstar", _retrieval_metric("unsafe_rate_tstar"), False,
          "fraction of unsafe-text queries whose top-1 image is unsafe")  # fmt: skip
_register("unsafe_rate_vstar", _retrieval_metric("unsafe_rate_vstar"), False,
          "fraction of unsafe-image queries whose top-1 text is unsafe")  # fmt: skip


def _zero_shot(ctx: ConceptEvalContext) -> float:
    q = ctx.data.test
    if q.label is None or not ctx.data.class_prompts:
        raise MetricUnavailable(f"{ctx.data.name} has no object classes")
    classes = [ctx.encode(texts=list(prompts)) for prompts in ctx.data.class_prompts]
    if ctx.hyperbolic:  # class prototype: exp0 of the mean tangent vector of its prompts; nearest by distance
        return lorentz_zero_shot_accuracy(ctx.embeddings()["v"], classes, torch.as_tensor(q.label), ctx.curvature())
    return zero_shot_accuracy(ctx.embeddings()["v"], classes, torch.as_tensor(q.label))


_register("zero_shot_acc", _zero_shot, True, "zero-shot classification accuracy of the safe test images",
          needs=("classes",))  # fmt: skip


def evaluate_concept(
    model: nn.Module,
    data: ConceptData,
    *,
    metrics: Iterable[str] | None = None,
    batch_size: int = 256,
    resources: ResourceProvider | None = None,
) -> dict[str, float | NotComputed]:
    """Compute ``metrics`` (default: every registered CLIP metric) of ``model`` on ``data.test``.

    Classifier (setting 1/2) metric names raise in one line. Metrics needing a built resource (read from
    ``resources``: the relearning attack, the generation analogue's models) run after the others, so building
    one (which trains and reseeds) never runs between two.

    Returns:
        name -> float, or :class:`~unlearnkit.metrics.NotComputed` with the reason.
    """
    chosen = select_metrics(metrics, "clip", "evaluate_concept")
    ctx = ConceptEvalContext(model, data, batch_size, resources)
    out: dict[str, float | NotComputed] = {}
    built = set(RESOURCES.list())
    for m in sorted(chosen, key=lambda m: bool(m.needs & built)):  # stable: given order within each group
        try:
            for need in sorted(m.needs & built):
                ctx.resource(need)
            out[m.name] = float(m.fn(ctx))
        except (MetricUnavailable, UnlearnkitError) as e:
            out[m.name] = NotComputed(str(e))
    return {m.name: out[m.name] for m in chosen}
