"""Copies of ComfyUI modules and VAEs at another dtype (made once per source and dtype, never changing the source),
and the precision context a PrecisionPolicy attached to a MODEL / CLIP / VAE.

No resolver here: what dtype to copy at is decided by the caller (attach.py, the decoders, the fp16 probe).
"""
from __future__ import annotations

import copy
import weakref
from typing import Optional

import comfy.model_patcher
import torch

from ..precision.casting import cast_module_copy
from ..precision.context import PrecisionContext
from ..precision.memo import PerSource

KEY = "precision_safe_context"  # in ModelPatcher.model_options (survives further clones) / on our VAE copies


def attached_context(obj) -> Optional[PrecisionContext]:
    """The context a PrecisionPolicy attached to a MODEL, CLIP or VAE, if any."""
    if obj is None:
        return None
    patcher = getattr(obj, "patcher", obj)  # CLIP and VAE hold a patcher; MODEL is one
    ctx = getattr(patcher, "model_options", {}).get(KEY) if hasattr(patcher, "model_options") else None
    return ctx if ctx is not None else getattr(obj, KEY, None)


# Weight copies at another dtype, per source module (weakly: a copy never keeps its source alive) and dtype, so a
# second policy node or a later run costs no new copy.
_MODULE_COPIES = PerSource()
_RESET_ON_COPY = {"model_loaded_weight_memory": 0, "lowvram_patch_counter": 0, "model_lowvram": False,
                  "current_weight_patches_uuid": None, "model_offload_buffer_memory": 0}


def _fresh(module: torch.nn.Module, device) -> None:
    """Forget ComfyUI's load state that a deep copy carried over from its source (the copy starts unloaded)."""
    for m in module.modules():
        if hasattr(m, "comfy_cast_weights"):
            comfy.model_patcher.wipe_lowvram_weight(m)
        m.__dict__.pop("comfy_patched_weights", None)
    for k, v in _RESET_ON_COPY.items():
        if hasattr(module, k):
            setattr(module, k, v)
    if hasattr(module, "current_patcher"):
        module.current_patcher = None
    module.device = device


def module_at_dtype(source: torch.nn.Module, dtype: torch.dtype, device, originals=None, prefix: str = ""):
    """A copy of `source` on `device`, in ComfyUI's unloaded state, whose weights under `prefix` that are at the
    module's storage dtype(s) are at `dtype` (tensors ComfyUI keeps in fp32 on purpose, e.g. a CLIP's logit scale or
    a model's sigma table, stay as they are), made once per source module and dtype.
    Returns (copy, whether it was made now)."""

    def make():
        # shared, not copied: the patchers that own the source (copying one would copy the source again) and ComfyUI's
        # model config (read-only; newer cores answer None for any attribute it lacks, which breaks deepcopy)
        owners = [v for m in source.modules() for k, v in m.__dict__.items()
                  if isinstance(v, comfy.model_patcher.ModelPatcher) or k == "model_config"]
        under = [t for n, t in source.named_parameters() if n.startswith(prefix) and t.is_floating_point()]
        stored = {t.dtype for t in under} - ({torch.float32} if len({t.dtype for t in under}) > 1 else set())
        made = cast_module_copy(source, dtype, device=device, originals=originals, keep=owners,
                                select=lambda name, t: name.startswith(prefix) and t.dtype in stored)
        _fresh(made, device)
        if hasattr(made, "manual_cast_dtype"):
            made.manual_cast_dtype = None  # the weights are at the compute dtype now
        return made

    return _MODULE_COPIES.made(source, (dtype, prefix), make)


def patcher_at_dtype(patcher, dtype: torch.dtype, prefix: str = ""):
    """A clone of `patcher` whose model is a copy with the float weights under `prefix` at `dtype`.

    ComfyUI then loads, patches (LoRA merges land in `dtype`) and computes it like a model loaded at that dtype: no
    per-layer cast at every step. The copy is made once per source model and dtype, from the weights as loaded
    (clones' in-place weight patches are read from their backups), on the offload device; the source is untouched.
    Returns (clone, bytes of the copy, whether it was made now).
    """
    originals = {k: b.weight for k, b in getattr(patcher, "backup", {}).items()}
    made, fresh = module_at_dtype(patcher.model, dtype, patcher.offload_device, originals, prefix)
    clone = patcher.clone()
    clone.model = made
    clone.backup, clone.object_patches_backup, clone.pinned = {}, {}, set()
    clone.object_patches.pop("manual_cast_dtype", None)
    clone.force_cast_weights = False
    clone.size = 0
    return clone, clone.model_size(), fresh


# Cast copies per source VAE, reused while that VAE lives (a retry or a second policy node costs no new copy).
# Copies refer to their source only weakly, so this cache never keeps a VAE alive.
_CAST_COPIES = PerSource()


def vae_source(vae):
    """The VAE a pack copy was made from (its weights are the most precise ones to cast from)."""
    ref = getattr(vae, "_precision_safe_source", None)
    source = ref() if ref is not None else None
    return source if source is not None else vae


def _cast_copy(vae, dtype: torch.dtype):
    source = vae_source(vae)
    if source.vae_dtype == dtype:
        return source

    def make():
        new = copy.copy(source)
        new.first_stage_model, _ = module_at_dtype(source.first_stage_model, dtype, source.patcher.offload_device)
        new.patcher = comfy.model_patcher.ModelPatcher(
            new.first_stage_model, load_device=source.patcher.load_device, offload_device=source.patcher.offload_device)
        new.vae_dtype = dtype
        new.size = None
        new._precision_safe_source = weakref.ref(source)
        return new

    return _CAST_COPIES.made(source, dtype, make)[0]


def vae_at_dtype(vae, dtype: torch.dtype, ctx: Optional[PrecisionContext] = None):
    """A VAE that decodes at `dtype` (`vae` itself when it already does), carrying `ctx` (or `vae`'s context)."""
    ctx = ctx if ctx is not None else attached_context(vae)
    base = vae if vae.vae_dtype == dtype else _cast_copy(vae, dtype)
    if attached_context(base) is ctx:
        return base
    tagged = copy.copy(base)  # shares the weights; only the attached context differs
    setattr(tagged, KEY, ctx)
    return tagged
