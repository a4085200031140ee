"""CF-k (catastrophic forgetting of the last k layers): fine-tune only the last k layers on D_r.

Goel, Prabhu, Sanyal, Lim, Torr, Kumaraguru, "Towards Adversarial Evaluations for Inexact Machine
Unlearning", arXiv 2201.06640 (2022), section "EU-k and CF-k". With ``f(x) = g_θ_b(h_θ_a(x))`` and ``g`` the
last ``k`` layers, CF-k keeps ``θ_a = θ_a^orig`` frozen and, *starting from the original* ``θ_b^orig``
(unlike EU-k, no re-initialisation), minimises ``Σ_{(x,y)∈D_r} CE(g_θ_b(h_θ_a(x)), y)``: forgetting of D_f
in the top layers comes from catastrophic forgetting only. The paper reports it as a strong, cheap baseline
(k = L is plain fine-tuning).

Layers as in :mod:`unlearnkit.methods.eu_k` (convolutions and ``nn.Linear``; the normalisation layers after
the first selected one go with them); the frozen part stays in eval mode.

Search space of ``unlearnkit tune`` (``search_space``; every other hyperparameter stays at its default):
``lr`` log-uniform [1e-4, 1e-2]; ``epochs`` integer [1, 10]; ``k`` integer 1, 3. The ranges bracket the defaults
and stay inside ``_parameter_constraints``.
"""

from __future__ import annotations

from typing import ClassVar

from unlearnkit.methods._base import IntRange, LogUniform, register_method
from unlearnkit.methods.eu_k import EUk


@register_method("cf_k")
class CFk(EUk):
    """Fine-tune the last ``k`` layers on D_r from the original weights (the rest frozen).

    EU-k's loop and hyperparameters (``k``, ``epochs``, ``lr``, ``batch_size``, ``optimizer``) without the
    re-initialisation.
    """

    paper = EUk.paper
    search_space = {"lr": LogUniform(1e-4, 1e-2), "epochs": IntRange(1, 10), "k": IntRange(1, 3)}
    reinit: ClassVar[bool] = False
