"""Setting 3 of the talk: unlearning and redirecting a concept in CLIP (Safe-CLIP), with retrieval evaluation.

Only the concept is known: a pretrained vision-language model (CLIP) must stop associating unsafe content
with its meaning while safe retrieval stays as it was. Pieces::

    import unlearnkit as uk
    from unlearnkit import concept as uc
    data = uc.make_concept_world(seed=0)                       # offline safe/unsafe twins (or uc.load_visu)
    clip = uc.small_clip("clip_small", vocab_size=len(data.tokenizer), max_length=16)
    uc.pretrain_clip(clip, data.train, data.tokenizer)         # the "original" model
    safe = uk.create_method("safe_clip", epochs=10).unlearn(
        clip, uc.ConceptUnlearnData(data.train, data.tokenizer, data.val))
    print(uc.evaluate_concept(safe, data))                     # R@K safe/redirected, unsafe rates, zero-shot
    uc.save_clip(safe, "safe-clip/")                           # CLIPModel.from_pretrained("safe-clip/")

Benchmarks run through :func:`run_concept_benchmark` (configs with ``setting: 3``).
"""

from __future__ import annotations

from unlearnkit.concept import neg_contrastive as _neg_contrastive  # noqa: F401  (registers)
from unlearnkit.concept import projection as _projection  # noqa: F401  (registers)
from unlearnkit.concept import report as _report  # noqa: F401  (registers the report section)
from unlearnkit.concept import safe_clip as _safe_clip  # noqa: F401  (registers)
from unlearnkit.concept._data import (
    ConceptData,
    FileImages,
    Quadruplets,
    TensorImages,
    Tokenizer,
    WordTokenizer,
)
from unlearnkit.concept._method import ConceptMethod, ConceptUnlearnData
from unlearnkit.concept.clip import (
    CLIP_CONFIGS,
    encode_images,
    encode_texts,
    load_clip,
    save_clip,
    small_clip,
    small_clip_config,
)
from unlearnkit.concept.metrics import ConceptEvalContext, evaluate_concept
from unlearnkit.concept.pretrain import clip_loss, pretrain_clip
from unlearnkit.concept.runner import (
    ConceptRunConfig,
    config_setting,
    load_concept_config,
    parse_concept_config,
    run_concept_benchmark,
)
from unlearnkit.concept.visu import load_visu
from unlearnkit.concept.world import WorldConfig, make_concept_world

__all__ = [
    "CLIP_CONFIGS",
    "ConceptData",
    "ConceptEvalContext",
    "ConceptMethod",
    "ConceptRunConfig",
    "ConceptUnlearnData",
    "FileImages",
    "Quadruplets",
    "TensorImages",
    "Tokenizer",
    "WordTokenizer",
    "WorldConfig",
    "clip_loss",
    "config_setting",
    "encode_images",
    "encode_texts",
    "evaluate_concept",
    "load_clip",
    "load_concept_config",
    "load_visu",
    "make_concept_world",
    "parse_concept_config",
    "pretrain_clip",
    "run_concept_benchmark",
    "save_clip",
    "small_clip",
    "small_clip_config",
]
