"""Training-free unsafe-direction projection: remove the concept's direction from CLIP's embeddings.

A linear-erasure baseline for Safe-CLIP (Poppi et al., ECCV 2024, arXiv 2311.16254), in the spirit of
projection-based concept removal (e.g. Ravfogel et al., "Null It Out", ACL 2020, arXiv 2004.07667, here
with a single mean-difference direction). Per modality, on the training quadruplets:

    d_text  = mean_i T̂(u_i) − mean_i T̂(s_i),      d_image = mean_i V̂(g_i) − mean_i V̂(v_i)

(T̂, V̂: L2-normalised embeddings), and every embedding e is replaced by P e with P = I − d̂ d̂ᵀ. With
``n_directions > 1``, the top right-singular vectors of the per-pair differences (u_i − s_i, g_i − v_i)
span the removed subspace instead (the first one is close to the mean direction).

Because P is linear and CLIP's projection heads are linear maps without bias, P is folded into them
(``text_projection.weight ← P·W_t``, ``visual_projection.weight ← P·W_v``): the result is a plain
``CLIPModel`` whose ``get_text_features`` / ``get_image_features`` apply the projection, exported like
any other. The encoders' hidden states are unchanged, so pipelines that read hidden states (Stable
Diffusion's text conditioning, LLaVA's vision tower) are not affected by this baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import CLIPModel

from unlearnkit.concept._method import ConceptMethod, ConceptUnlearnData, register_concept_method
from unlearnkit.concept.clip import encode_images, encode_texts
from unlearnkit.methods._base import BOOLEAN, POSITIVE_INT


def unsafe_directions(safe: torch.Tensor, unsafe: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Orthonormal unsafe directions ``[k, D]`` from paired normalised embeddings ``[N, D]``.

    ``k = 1``: the normalised mean difference. ``k > 1``: the top-k right-singular vectors of the
    per-pair differences (uncentred), so the mean direction is (nearly) the first.
    """
    diff = F.normalize(unsafe, dim=-1) - F.normalize(safe, dim=-1)
    if k == 1:
        return F.normalize(diff.mean(0), dim=0)[None]
    _, _, vh = torch.linalg.svd(diff.double(), full_matrices=False)
    return vh[: min(k, vh.shape[0])].float()


def projector(directions: torch.Tensor) -> torch.Tensor:
    """``P = I − Σ_j d_j d_jᵀ`` for orthonormal rows ``d_j``."""
    d = directions.double()
    return (torch.eye(d.shape[1], dtype=torch.float64) - d.T @ d).float()


@register_concept_method("unsafe_projection")
class UnsafeProjection(ConceptMethod):
    """Project the unsafe direction(s) out of both modalities' embeddings (training-free).

    Args:
        n_directions: directions removed per modality (1: the mean difference).
        text: project the text embeddings.
        image: project the image embeddings.
    """

    paper = 'linear erasure (Ravfogel et al., "Null It Out", ACL 2020, arXiv:2004.07667), a Safe-CLIP baseline'
    trains = False
    _parameter_constraints = {"n_directions": [POSITIVE_INT], "text": [BOOLEAN], "image": [BOOLEAN]}

    def __init__(self, *, n_directions: int = 1, text: bool = True, image: bool = True) -> None:
        self.n_directions = n_directions
        self.text = text
        self.image = image

    def _unlearn(self, model: CLIPModel, data: ConceptUnlearnData, generator: torch.Generator) -> CLIPModel:
        q = data.train
        self.report_ = {"trainable_params": 0.0}
        with torch.no_grad():
            if self.text:
                s = encode_texts(model, data.tokenizer, q.safe_text)
                u = encode_texts(model, data.tokenizer, q.unsafe_text)
                self.text_directions_ = unsafe_directions(s, u, self.n_directions)
                w = model.text_projection.weight  # [D, H]: features = W h
                w.copy_(projector(self.text_directions_).to(w) @ w)  # P·W_t
            if self.image:
                v, g = encode_images(model, q.safe_image), encode_images(model, q.unsafe_image)
                self.image_directions_ = unsafe_directions(v, g, self.n_directions)
                w = model.visual_projection.weight
                w.copy_(projector(self.image_directions_).to(w) @ w)  # P·W_v
        return model
