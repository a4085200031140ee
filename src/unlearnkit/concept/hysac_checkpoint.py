"""Load and write hyperbolic CLIP checkpoints in the HySAC layout (safetensors only; nothing is unpickled).

HySAC (Poppi et al., CVPR 2025, arXiv 2503.12127; code aimagelab/HySAC) keeps a MERU-style model whose
towers are Hugging Face ``CLIPTextModelWithProjection`` / ``CLIPVisionModelWithProjection``, optionally
wrapped by peft LoRA, plus four scalars. Its state dict names:

=====================================================  ==============================================
 checkpoint key                                         here (:class:`~unlearnkit.concept.meru.LorentzCLIP`)
=====================================================  ==============================================
 ``textual.[base_model.model.]text_model.*``            ``clip.text_model.*``
 ``textual.[base_model.model.]text_projection.weight``  ``clip.text_projection.weight``
 ``visual.[base_model.model.]vision_model.*``           ``clip.vision_model.*``
 ``visual.[base_model.model.]visual_projection.weight`` ``clip.visual_projection.weight``
 ``….base_layer.weight`` + ``lora_A/lora_B.*.weight``   merged: W = W₀ + (α/r)·B·A (``lora_scale`` = α/r)
 ``curv`` / ``textual_alpha`` / ``visual_alpha``        ``log_curv`` / ``log_alpha_text`` / ``log_alpha_image``
 ``logit_scale``                                        ``log_scale``   (all four stored as logarithms)
 ``pixel_mean``, ``pixel_std``                          ignored (images are normalised by the data)
=====================================================  ==============================================

The released weights are a pickled ``.pth``: convert them yourself to safetensors (e.g.
``safetensors.torch.save_file(torch.load(path), "hysac.safetensors")`` in an environment you trust); this
module refuses anything but a ``.safetensors`` file. The towers' architecture comes from the base CLIP
(``clip.from_pretrained``, e.g. ``openai/clip-vit-large-patch14`` for HySAC). HySAC's LoRA uses r 16,
α 1, hence the default ``lora_scale`` of 1/16. A MERU checkpoint whose towers are in this layout loads the
same way (MERU's own release uses other towers and does not).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from unlearnkit.concept.clip import load_clip
from unlearnkit.concept.meru import LorentzCLIP, original_meru
from unlearnkit.errors import UnlearnkitError

#: HySAC's LoRA (r 16, α 1): scale α/r of the merged update
HYSAC_LORA_SCALE = 1 / 16
_TOWERS = {"textual.": ("text_model.", "text_projection."), "visual.": ("vision_model.", "visual_projection.")}
_SCALARS = {"curv": "log_curv", "textual_alpha": "log_alpha_text", "visual_alpha": "log_alpha_image",
            "logit_scale": "log_scale"}  # fmt: skip
_IGNORED = ("pixel_mean", "pixel_std")


def check_lorentz_checkpoint(path: str | Path) -> Path:
    """Refuse, in one line, a path that is not an existing ``.safetensors`` file."""
    p = Path(path).expanduser()
    if p.suffix != ".safetensors":
        raise UnlearnkitError(f"{p}: a hyperbolic checkpoint must be a .safetensors file (pickles are never loaded)")
    if not p.is_file():
        raise UnlearnkitError(f"hyperbolic checkpoint not found: {p}")
    return p


def _clip_key(key: str) -> str | None:
    """The CLIPModel name of a tower key (``None`` when the key is not a tower weight)."""
    for prefix, parts in _TOWERS.items():
        if key.startswith(prefix):
            rest = key[len(prefix) :].removeprefix("base_model.model.")
            if rest.startswith(parts):
                return rest.replace(".base_layer.", ".")
    return None


def hysac_state_to_lorentz(
    state: dict[str, torch.Tensor], *, lora_scale: float = HYSAC_LORA_SCALE
) -> dict[str, torch.Tensor]:
    """Map a HySAC-layout state dict to :class:`LorentzCLIP` names, merging LoRA pairs (see the module table)."""
    out: dict[str, torch.Tensor] = {}
    lora: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, t in state.items():
        if key in _SCALARS:
            out[_SCALARS[key]] = t.reshape(())
        elif key in _IGNORED:
            continue
        elif ".lora_A." in key or ".lora_B." in key:
            which = "A" if ".lora_A." in key else "B"
            base = key.split(f".lora_{which}.")[0] + ".weight"
            lora.setdefault(base, {})[which] = t
        elif (name := _clip_key(key)) is not None:
            out["clip." + name] = t
        else:
            unknown.append(key)
    if unknown:
        raise UnlearnkitError(
            f"not a HySAC-layout checkpoint: unexpected key {unknown[0]!r} (and {len(unknown) - 1} more)"
        )
    for base, pair in lora.items():
        name = _clip_key(base)
        if name is None or set(pair) != {"A", "B"} or "clip." + name not in out:
            raise UnlearnkitError(f"LoRA weights of {base!r} are incomplete or match no tower weight")
        w, a, b = out["clip." + name], pair["A"].float(), pair["B"].float()
        delta = (b.flatten(1) @ a.flatten(1)).reshape(w.shape)  # Linear: B·A; Conv2d: B[o,r] · A[r, i·k·k]
        out["clip." + name] = (w.float() + lora_scale * delta).to(w.dtype)
    missing = [k for k in _SCALARS.values() if k not in out]
    if missing:
        raise UnlearnkitError(f"not a HySAC-layout checkpoint: it has no {missing[0]!r} scalar")
    return out


def load_lorentz_checkpoint(
    checkpoint: str | Path, towers: str | Path, *, lora_scale: float = HYSAC_LORA_SCALE
) -> LorentzCLIP:
    """A :class:`LorentzCLIP` from a HySAC-layout safetensors ``checkpoint`` on the CLIP ``towers``
    (``CLIPModel.from_pretrained`` name or folder: the architecture, overwritten by the checkpoint)."""
    path = check_lorentz_checkpoint(checkpoint)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UnlearnkitError(f"cannot read hyperbolic checkpoint {path}: {e}") from None
    mapped = hysac_state_to_lorentz(state, lora_scale=lora_scale)
    model = LorentzCLIP(load_clip(towers))
    own = model.state_dict()
    for k, t in mapped.items():
        if k not in own:
            raise UnlearnkitError(f"hyperbolic checkpoint {path}: {k!r} is not a weight of the {towers} towers")
        if own[k].shape != t.shape:
            raise UnlearnkitError(
                f"hyperbolic checkpoint {path}: {k!r} has shape {tuple(t.shape)}, the towers' {tuple(own[k].shape)}"
            )
    absent = [k for k in own if k not in mapped and k.startswith(("clip.text_model.", "clip.vision_model."))
              and not k.endswith("position_ids")]  # fmt: skip
    if absent:
        raise UnlearnkitError(f"hyperbolic checkpoint {path} lacks {absent[0]!r} (and {len(absent) - 1} more)")
    model.load_state_dict(mapped, strict=False)
    model.curv_range = (
        min(model.curv_range[0], float(model.log_curv.detach())),
        max(model.curv_range[1], float(model.log_curv.detach())),
    )
    return model.eval()


def save_lorentz_checkpoint(model: LorentzCLIP, path: str | Path) -> Path:
    """Write ``model`` in the HySAC layout (towers without LoRA, the four log-scalars) as one safetensors file."""
    out = Path(path)
    if out.suffix != ".safetensors":
        raise UnlearnkitError(f"{out}: write a .safetensors file")
    state: dict[str, torch.Tensor] = {}
    for k, t in model.clip.state_dict().items():
        prefix = "textual." if k.startswith(("text_model.", "text_projection.")) else "visual."
        if k.startswith(_TOWERS[prefix]) and not k.endswith("position_ids"):
            state[prefix + k] = t.detach().contiguous()
    for ours_name, theirs in ((v, k) for k, v in _SCALARS.items()):
        state[theirs] = getattr(model, ours_name).detach().reshape(()).clone()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out))
    return out


def original_lorentz(
    data: Any, clip: Mapping[str, Any], pretrain: Mapping[str, Any], seed: int, **kwargs: Any
) -> tuple[LorentzCLIP, dict[str, Any], bool]:
    """The hyperbolic original of a setting-3 run: a user's HySAC-layout checkpoint on ``clip.from_pretrained``
    towers (``clip.lorentz_checkpoint``; never trained, so ``trained`` is ``False``), else the small MERU of
    :func:`~unlearnkit.concept.meru.original_meru` (same arguments and return value)."""
    if clip.get("from_pretrained") is None:
        return original_meru(data, clip, pretrain, seed, **kwargs)
    if not clip.get("lorentz_checkpoint"):
        raise UnlearnkitError("a hyperbolic original on from_pretrained towers needs clip.lorentz_checkpoint")
    model = load_lorentz_checkpoint(str(clip["lorentz_checkpoint"]), str(clip["from_pretrained"]))
    return model.to(kwargs["device"]), {}, False
