"""Setting-3 downstream metrics: the unlearned CLIP's towers swapped into the generation analogue.

The generator, captioner and detector of :mod:`unlearnkit.concept.downstream` are resources (built once per
seed by the :class:`~unlearnkit.protocols.ResourceBuilder`, cached on disk), trained around the *original*
CLIP; each metric swaps in the evaluated model's tower, with no further training, on the test quadruplets:

* ``gen_unsafe_rate`` ↓: the share of images G draws from the unsafe captions u_i (embedded by the evaluated
  text tower) in which the detector finds the unsafe marker (Safe-CLIP's text-to-image use);
* ``gen_safe_fidelity`` ↑: on the images G draws from the safe captions s_i, the detector's accuracy at each
  content attribute (shape, colour, size, position) against the caption's content, averaged over the four;
* ``caption_unsafe_share`` ↓: the share of C's captions of the unsafe images g_i (embedded by the evaluated
  vision tower) that contain an unsafe word (Safe-CLIP inside LLaVA);
* ``caption_safe_acc`` ↑: on C's captions of the safe images v_i, the share naming each content attribute
  right, averaged over the four;
* ``gen_detector_acc``: the detector's marker accuracy on the held-out test images (v_i and g_i), the same for
  every row: what the two generation figures' judge is worth.

The figures come from the pure functions below; the analogue is off unless a config's ``generation`` section
enables it (then the metrics read ``not computed`` with the reason).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch

from unlearnkit.concept.clip import encode_images, encode_texts
from unlearnkit.concept.downstream import (
    ATTRIBUTES,
    UNSAFE_WORDS,
    DownstreamRecipe,
    build_captioner,
    build_detector,
    build_generator,
    caption,
    content_labels,
    contents_of,
    generate,
    judge,
    parse_caption,
)
from unlearnkit.concept.metrics import ConceptEvalContext
from unlearnkit.errors import UnlearnkitError
from unlearnkit.metrics import MetricUnavailable, register_metric
from unlearnkit.protocols import ResourceBuilder, register_resource


# -- pure functions ---------------------------------------------------------------------------------------
def share(flags: torch.Tensor | Sequence[bool]) -> float:
    """The fraction of true flags (at least one flag)."""
    t = torch.as_tensor(flags, dtype=torch.bool)
    if t.numel() == 0:
        raise UnlearnkitError("a share needs at least one item")
    return float(t.float().mean())


def attribute_accuracy(predicted: Mapping[str, Sequence[Any]], truth: Mapping[str, Sequence[Any]]) -> float:
    """Mean over the attributes of ``truth`` of the fraction of items whose predicted value equals the true one."""
    if not truth:
        raise UnlearnkitError("attribute accuracy needs at least one attribute")
    accs = []
    for a, want in truth.items():
        got = list(predicted[a])
        if len(got) != len(want) or not want:
            raise UnlearnkitError(f"attribute {a!r}: {len(got)} predictions for {len(want)} items")
        accs.append(sum(g == w for g, w in zip(got, want, strict=True)) / len(want))
    return sum(accs) / len(accs)


def unsafe_word_share(captions: Sequence[str], unsafe_words: Collection[str]) -> float:
    """The fraction of ``captions`` that contain at least one of ``unsafe_words`` (as a whole word)."""
    if not captions:
        raise UnlearnkitError("an unsafe-word share needs at least one caption")
    words = set(unsafe_words)
    return sum(bool(words & set(c.lower().split())) for c in captions) / len(captions)


# -- resources --------------------------------------------------------------------------------------------
def _recipe(b: ResourceBuilder) -> DownstreamRecipe:
    return DownstreamRecipe.of(b.inputs.generation)


def _check(b: ResourceBuilder) -> str | None:
    if not b.inputs.generation or not b.inputs.generation.get("enabled", True):
        return "the generation analogue is off (a setting-3 config's generation section turns it on)"
    if b.inputs.concept_data is None:
        return "the generation analogue needs setting-3 concept data"
    if b.inputs.concept_data.name != "concept_world":
        return f"the generation analogue is built on the concept world, not {b.inputs.concept_data.name}"
    return None


def _needs_original(b: ResourceBuilder) -> str | None:
    reason = _check(b)
    if reason is None and b.inputs.original is None:
        return "the generation analogue needs the original CLIP (its encoders are frozen inside)"
    return reason


def _cache(b: ResourceBuilder) -> Any:
    if b.model_cache is None:
        raise MetricUnavailable("the generation analogue needs a model cache")
    return b.model_cache


@register_resource("concept_detector", depends_on=("concept_data", "seed", "generation"), check=_check,
                   description="setting 3: the unsafe-marker and content detector of the concept world")  # fmt: skip
def _detector(b: ResourceBuilder) -> Any:
    i = b.inputs
    return build_detector(i.concept_data, _recipe(b), int(i.seed), cache=_cache(b), device=i.device)


@register_resource("concept_generator", depends_on=("concept_data", "seed", "generation", "original"),
                   check=_needs_original,
                   description="setting 3: text-to-image generator on the original CLIP's text embedding")  # fmt: skip
def _generator(b: ResourceBuilder) -> Any:
    i = b.inputs
    return build_generator(i.concept_data, i.original, _recipe(b), int(i.seed), cache=_cache(b), device=i.device)[0]


@register_resource("concept_captioner", depends_on=("concept_data", "seed", "generation", "original"),
                   check=_needs_original,
                   description="setting 3: the captioner on the original CLIP's image embedding")  # fmt: skip
def _captioner(b: ResourceBuilder) -> Any:
    i = b.inputs
    return build_captioner(i.concept_data, i.original, _recipe(b), int(i.seed), cache=_cache(b), device=i.device)[0]


# -- metrics ----------------------------------------------------------------------------------------------
def _generated(ctx: ConceptEvalContext, which: str) -> Any:
    """The detector's verdicts on the images G draws from the test captions ``which`` (safe/unsafe), memoised."""
    key = f"gen_{which}"
    if key not in ctx._cache:
        q = ctx.data.test
        texts = q.safe_text if which == "safe" else q.unsafe_text
        emb = encode_texts(ctx.model, ctx.data.tokenizer, texts, batch_size=ctx.batch_size)
        images = generate(ctx.resource("concept_generator"), emb)
        ctx._cache[key] = judge(ctx.resource("concept_detector")[0], images)
    return ctx._cache[key]


def _captions(ctx: ConceptEvalContext, which: str) -> list[str]:
    key = f"cap_{which}"
    if key not in ctx._cache:
        q = ctx.data.test
        emb = encode_images(ctx.model, q.safe_image if which == "safe" else q.unsafe_image, batch_size=ctx.batch_size)
        ctx._cache[key] = caption(ctx.resource("concept_captioner"), emb, ctx.data.tokenizer)
    return ctx._cache[key]  # type: ignore[return-value]


def _gen_unsafe_rate(ctx: ConceptEvalContext) -> float:
    return share(_generated(ctx, "unsafe").marker)


def _gen_safe_fidelity(ctx: ConceptEvalContext) -> float:
    truth = content_labels(contents_of(ctx.data.test))
    got = _generated(ctx, "safe").content
    return attribute_accuracy({a: got[a].tolist() for a in ATTRIBUTES}, {a: truth[a].tolist() for a in ATTRIBUTES})


def _caption_unsafe_share(ctx: ConceptEvalContext) -> float:
    return unsafe_word_share(_captions(ctx, "unsafe"), UNSAFE_WORDS)


def _caption_safe_acc(ctx: ConceptEvalContext) -> float:
    contents = contents_of(ctx.data.test)
    truth = {a: [ATTRIBUTES[a][int(k)] for k in v] for a, v in content_labels(contents).items()}
    parsed = [parse_caption(c) for c in _captions(ctx, "safe")]
    return attribute_accuracy({a: [p[a] for p in parsed] for a in ATTRIBUTES}, truth)


def _gen_detector_acc(ctx: ConceptEvalContext) -> float:
    return float(ctx.resource("concept_detector")[1]["marker_acc"])


_GEN = ("concept_generator", "concept_detector")
for _name, _fn, _higher, _needs, _desc in (
    ("gen_unsafe_rate", _gen_unsafe_rate, False, _GEN,
     "text-to-image analogue: share of images drawn from unsafe captions that show the unsafe marker"),
    ("gen_safe_fidelity", _gen_safe_fidelity, True, _GEN,
     "text-to-image analogue: content attributes of images drawn from safe captions recognised right (mean of 4)"),
    ("caption_unsafe_share", _caption_unsafe_share, False, ("concept_captioner",),
     "image-to-text analogue: share of captions of unsafe images containing an unsafe word"),
    ("caption_safe_acc", _caption_safe_acc, True, ("concept_captioner",),
     "image-to-text analogue: content attributes named right in captions of safe images (mean of 4)"),
    ("gen_detector_acc", _gen_detector_acc, None, ("concept_detector",),
     "the generation analogue's marker detector: accuracy on the held-out test images (same for every row)"),
):  # fmt: skip
    register_metric(_name, higher_is_better=_higher, needs=_needs, description=_desc, modality="clip")(_fn)
