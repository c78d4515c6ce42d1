"""Clone MODEL / CLIP / VAE with a precision context applied and attached; find an attached context.

Objects on graph edges are shared with every other consumer, so nothing here changes what it was given:
MODEL and CLIP are patched through `clone()`, a VAE is shallow-copied with its own cast first-stage model.
"""
from __future__ import annotations

import copy
import weakref
from typing import Optional

import torch

import comfy.model_patcher

from ..precision.context import PrecisionContext, pick

KEY = "precision_safe_context"  # in ModelPatcher.model_options (survives further clones) / on our VAE copies


def attached_context(obj) -> Optional[PrecisionContext]:
    """The context a PrecisionPolicy attached to a MODEL, CLIP or VAE, if any."""
    if obj is None:
        return None
    patcher = getattr(obj, "patcher", obj)  # CLIP and VAE hold a patcher; MODEL is one
    ctx = getattr(patcher, "model_options", {}).get(KEY) if hasattr(patcher, "model_options") else None
    return ctx if ctx is not None else getattr(obj, KEY, None)


def model_compute_dtype(model) -> torch.dtype:
    """What a MODEL computes in, read from attributes (never from its weights).

    While another clone is loaded, its object patches sit on the shared model and the originals wait in
    `object_patches_backup`: read this clone's own value, not whichever clone was loaded last."""
    key = "manual_cast_dtype"
    if key in model.object_patches:
        manual = model.object_patches[key]
    elif key in getattr(model, "object_patches_backup", {}):
        manual = model.object_patches_backup[key]
    else:
        manual = getattr(model.model, key, None)
    return manual if manual is not None else model.model_dtype()


def model_with_policy(model, ctx: PrecisionContext):
    """A MODEL clone computing at the context's unet dtype, with the context attached."""
    clone = model.clone()
    clone.model_options[KEY] = ctx
    dtype = ctx.dtype_for("unet", model.load_device)
    if model_compute_dtype(model) != dtype:
        # Core's own per-clone switch: weights are cast on the fly in the layers, the shared model is untouched.
        clone.set_model_compute_dtype(dtype)
    return clone


def clip_with_policy(clip, ctx: PrecisionContext):
    """A CLIP clone with the context attached (ComfyUI's text encoders pick their own compute dtype)."""
    clone = clip.clone()
    clone.patcher.model_options[KEY] = ctx
    return clone


def cast_module_copy(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A deep copy of `module` with float parameters/buffers at `dtype`, copying each tensor only once."""
    memo = {}
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point() and id(t) not in memo:
            cast = t.detach().to(dtype)
            memo[id(t)] = torch.nn.Parameter(cast, requires_grad=False) if isinstance(t, torch.nn.Parameter) else cast
    new = copy.deepcopy(module, memo)
    for m in new.modules():  # some modules cache their dtype as a plain attribute
        if isinstance(m.__dict__.get("dtype"), torch.dtype) and m.__dict__["dtype"].is_floating_point:
            m.dtype = dtype
    return new


# Cast copies per source VAE, reused while that VAE lives (a retry or a second policy node costs no new copy).
# Copies refer to their source only weakly, so this cache never keeps a VAE alive.
_CAST_COPIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def vae_source(vae):
    """The VAE a pack copy was made from (its weights are the most precise ones to cast from)."""
    ref = getattr(vae, "_precision_safe_source", None)
    source = ref() if ref is not None else None
    return source if source is not None else vae


def _cast_copy(vae, dtype: torch.dtype):
    source = vae_source(vae)
    if source.vae_dtype == dtype:
        return source
    copies = _CAST_COPIES.setdefault(source, {})
    if dtype not in copies:
        new = copy.copy(source)
        new.first_stage_model = cast_module_copy(source.first_stage_model, dtype)
        new.patcher = comfy.model_patcher.ModelPatcher(
            new.first_stage_model, load_device=source.patcher.load_device, offload_device=source.patcher.offload_device)
        new.vae_dtype = dtype
        new.size = None
        new._precision_safe_source = weakref.ref(source)
        copies[dtype] = new
    return copies[dtype]


def vae_at_dtype(vae, dtype: torch.dtype, ctx: Optional[PrecisionContext] = None):
    """A VAE that decodes at `dtype` (`vae` itself when it already does), carrying `ctx` (or `vae`'s context)."""
    ctx = ctx if ctx is not None else attached_context(vae)
    base = vae if vae.vae_dtype == dtype else _cast_copy(vae, dtype)
    if attached_context(base) is ctx:
        return base
    tagged = copy.copy(base)  # shares the weights; only the attached context differs
    setattr(tagged, KEY, ctx)
    return tagged


def vae_with_policy(vae, ctx: PrecisionContext, fp16_safe: bool = False):
    """A VAE copy decoding at the context's vae dtype, with the context attached."""
    return vae_at_dtype(vae, ctx.dtype_for("vae", vae.device, vae_fp16_safe=fp16_safe), ctx)


def find_context(explicit: Optional[PrecisionContext], *objects) -> tuple[PrecisionContext, str]:
    """The context a pack node uses: explicit edge, else one attached to a model it got, else auto."""
    return pick(explicit, *(attached_context(o) for o in objects))
