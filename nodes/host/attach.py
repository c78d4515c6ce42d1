"""Clone MODEL / CLIP / VAE with a precision context applied and attached; find an attached context.

Objects on graph edges are shared with every other consumer, so nothing here changes what it was given:
MODEL and CLIP are patched through `clone()`, a VAE is shallow-copied with its own cast first-stage model (copies.py).
"""
from __future__ import annotations

from typing import Optional

import comfy.model_patcher
import comfy.sd
import torch

from ..precision.context import PrecisionContext, dtype_name, pick
from ..precision.reach import Census, describe_formats
from ..precision.resolve import Resolution
from .copies import KEY, attached_context, patcher_at_dtype, vae_at_dtype
from .facts import model_compute_dtype, model_storage, resolution


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:.0f} MiB"


def model_with_policy(model, ctx: PrecisionContext, want: Optional[Resolution] = None):
    """A MODEL clone running at the resolved unet dtype with the context attached, and a note on what it costs.

    Same dtype as ComfyUI's: a plain clone (same weights, same patches: ComfyUI switches between it and the input
    MODEL without re-loading). Another dtype: a copy of the weights at that dtype, made once; for quantized weights
    (GGUF, fp8 with or without scales, QuantizedTensor layouts) never a copy: ComfyUI's own per-layer compute switch
    (the manual cast its ops and the quantized ops read), as ComfyUI itself runs them, and the note says per format
    what that did.
    """
    want = want or resolution(ctx, "unet", model)
    found = model_storage(model)
    if found.any_quantized:
        clone = model.clone()
        if want.differs_from_comfy:
            clone.set_model_compute_dtype(want.dtype)
        note = quantized_note(found, want, model_compute_dtype(model))
    elif not want.differs_from_comfy:
        clone = model.clone()
        note = f"MODEL clone computes {want.name} as ComfyUI chose: shares weights and patches, no cost"
    elif model.model_dtype() == want.dtype:
        clone = model.clone()
        clone.set_model_compute_dtype(want.dtype)
        note = (f"MODEL clone computes {want.name} at its {want.name} weights' own dtype (ComfyUI's per-clone switch): "
                "a prompt that also runs the input MODEL re-loads the weights at each switch")
    else:
        clone, size, fresh = patcher_at_dtype(model, want.dtype, prefix="diffusion_model.")
        note = (f"MODEL weights converted once to {want.name} ({_mib(size)} copy, kept while the input model lives"
                f"{'; made now' if fresh else '; reused'}): no per-step cast")
    clone, merged = merge_at_compute_dtype(clone)
    if merged:
        note += f"; {merged}"
    clone.model_options[KEY] = ctx
    return clone, note


def quantized_note(found: Census, want: Resolution, before: torch.dtype) -> str:
    """What a policy did to a quantized MODEL, per storage format, and what it cost."""
    quantized, plain = found.quantized(), found.plain()
    switched = want.dtype != before
    how = (f"computed at {want.name} (was {dtype_name(before)}): the clone's manual-cast dtype, which its ops "
           "dequantize to per layer" if switched else f"computed at {want.name} as ComfyUI chose")
    note = f"MODEL clone: {describe_formats(quantized)} kept quantized, {how}"
    if plain:
        note += (f"; {describe_formats(plain)} kept as stored, " +
                 (f"cast per layer to {want.name}" if switched else "as ComfyUI loaded them"))
    note += "; no weight copied (0 MiB)"
    if switched:
        note += ", a prompt that also runs the input MODEL re-loads the weights at each switch"
    return note


def _range(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).max if dtype.is_floating_point else 0.0


def merge_at_compute_dtype(model):
    """`model`, or a clone whose weight patches (LoRA) merge at its compute dtype, when its weights are stored in a
    narrower range than it computes in (fp16 or fp8 storage computed at bf16/fp32): ComfyUI merges a patch into the
    stored dtype, where a large LoRA delta overflows fp16 (inf: a NaN latent) or saturates fp8. The weights are then a
    copy at the compute dtype (made once per source model). Returns (model, note or None)."""
    compute, stored = model_compute_dtype(model), model.model_dtype()
    if not model.patches or not compute.is_floating_point or _range(stored) >= _range(compute):
        return model, None
    if not model_storage(model).copyable:  # GGUF blocks, QuantizedTensors, scaled fp8: their ops apply patches
        return model, None
    clone, size, fresh = patcher_at_dtype(model, compute, prefix="diffusion_model.")
    return clone, (f"{len(model.patches)} weight patches merge at {dtype_name(compute)}, not into the "
                   f"{dtype_name(stored)} storage ({_mib(size)} copy{', made now' if fresh else ', reused'})")


def clip_with_policy(clip, ctx: PrecisionContext, want: Optional[Resolution] = None):
    """A CLIP clone holding its text encoder at the resolved text_encoder dtype, with the context attached."""
    want = want or resolution(ctx, "text_encoder", clip)
    clone = clip.clone()
    if want.differs_from_comfy:
        clone.patcher, size, fresh = patcher_at_dtype(clip.patcher, want.dtype)
        clone.cond_stage_model = clone.patcher.model
        for m in clone.cond_stage_model.modules():
            if isinstance(getattr(m, "dtypes", None), set):
                m.dtypes = {want.dtype}
        note = (f"CLIP text encoder converted once to {want.name} ({_mib(size)} copy"
                f"{', made now' if fresh else ', reused'})")
    else:
        note = f"CLIP clone keeps {want.name} as ComfyUI chose: no cost"
    clone.patcher.model_options[KEY] = ctx
    return clone, note


def vae_with_policy(vae, ctx: PrecisionContext, want: Optional[Resolution] = None):
    """A VAE copy decoding at the resolved vae dtype, with the context attached (same weights when unchanged)."""
    want = want or resolution(ctx, "vae", vae)
    new = vae_at_dtype(vae, want.dtype, ctx)
    if not want.differs_from_comfy:
        return new, f"VAE copy decodes {want.name} as ComfyUI chose: same weights, no cost"
    return new, f"VAE copy decodes at {want.name} ({want.reason}); its weights are a cached copy"


def kind_of(obj) -> str:
    """What a value is, as ComfyUI's types name it in the editor: MODEL, CLIP, VAE (else its class)."""
    if isinstance(obj, comfy.model_patcher.ModelPatcher):
        return "MODEL"
    if isinstance(obj, comfy.sd.CLIP):
        return "CLIP"
    if isinstance(obj, comfy.sd.VAE):
        return "VAE"
    return type(obj).__name__


def find_context(explicit: Optional[PrecisionContext], *objects) -> tuple[PrecisionContext, str]:
    """The context a pack node uses: explicit edge, else one attached to a MODEL/CLIP/VAE it got, else auto."""
    return pick(explicit, *((kind_of(o), attached_context(o)) for o in objects))
