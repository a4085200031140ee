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

Benchmarks of ``setting: 3`` configs run through the one runner (:func:`unlearnkit.experiments.run_benchmark`,
sweeps, ``audit``); this package holds only what is specific to CLIP.
"""

from __future__ import annotations

from unlearnkit.concept import downstream_metrics as _downstream_metrics  # noqa: F401  (registers)
from unlearnkit.concept import hysac as _hysac  # noqa: F401  (registers)
from unlearnkit.concept import neg_contrastive as _neg_contrastive  # noqa: F401  (registers)
from unlearnkit.concept import projection as _projection  # noqa: F401  (registers)
from unlearnkit.concept import relearn as _relearn  # noqa: F401  (registers the CLIP relearning attack)
from unlearnkit.concept import safe_clip as _safe_clip  # noqa: F401  (registers)
from unlearnkit.concept import safety_metrics as _safety_metrics  # noqa: F401  (registers)
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
from unlearnkit.concept.meru import LorentzCLIP, original_meru, pretrain_meru, small_meru
from unlearnkit.concept.metrics import ConceptEvalContext, evaluate_concept
from unlearnkit.concept.pretrain import clip_loss, original_clip, pretrain_clip
from unlearnkit.concept.sources import FORGET, check_clip_source, export_clip, load_concept_data
from unlearnkit.concept.visu import load_visu
from unlearnkit.concept.world import WorldConfig, make_concept_world

__all__ = [
    "CLIP_CONFIGS",
    "FORGET",
    "ConceptData",
    "ConceptEvalContext",
    "ConceptMethod",
    "ConceptUnlearnData",
    "FileImages",
    "LorentzCLIP",
    "Quadruplets",
    "TensorImages",
    "Tokenizer",
    "WordTokenizer",
    "WorldConfig",
    "check_clip_source",
    "clip_loss",
    "encode_images",
    "encode_texts",
    "evaluate_concept",
    "export_clip",
    "load_clip",
    "load_concept_data",
    "load_visu",
    "make_concept_world",
    "original_clip",
    "original_meru",
    "pretrain_clip",
    "pretrain_meru",
    "save_clip",
    "small_clip",
    "small_clip_config",
    "small_meru",
]
