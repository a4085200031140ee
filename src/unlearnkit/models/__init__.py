"""Models: small nets for the offline benchmarks and standard vision backbones."""

from __future__ import annotations

from unlearnkit.models import airbench as _airbench  # noqa: F401  (registers)
from unlearnkit.models import allcnn as _allcnn  # noqa: F401  (registers)
from unlearnkit.models import resnet as _resnet  # noqa: F401  (registers)
from unlearnkit.models import small as _small  # noqa: F401  (registers)
from unlearnkit.models import vgg as _vgg  # noqa: F401  (registers)
from unlearnkit.models import vit as _vit  # noqa: F401  (registers; timm is imported lazily)
from unlearnkit.models._base import (
    MODELS,
    create_model,
    factory_fingerprint,
    list_models,
    model_fingerprint,
    register_model,
)

__all__ = ["MODELS", "create_model", "factory_fingerprint", "list_models", "model_fingerprint", "register_model"]
