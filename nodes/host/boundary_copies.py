"""UPSCALE_MODEL, CONTROL_NET and CLIP_VISION clones that run at the context's dtype and cast at their boundary.

Each clone holds its network at the resolved dtype (copies.module_at_dtype's cached copy when that differs from
its weights, else the same weights) behind a forward that casts every float tensor going in to the dtype of the
network's real weights, and every float tensor coming out back to the dtype of the input it got: whatever dtype a
caller feeds (an fp16 IMAGE from a video node, a latent cast to a declared dtype the weights do not have), the network
sees its own dtype and the caller gets back its own. The object given is never changed; its network is shared, not
copied, unless its dtype changes.

A CONTROL_NET runs at the `unet` role (it computes beside the UNet; ComfyUI loads it at the UNet's dtype), a
CLIP_VISION at `text_encoder` (ComfyUI's dtype for both), an UPSCALE_MODEL at `intermediate` (it maps IMAGE to
IMAGE; auto keeps its weights' dtype).
"""
from __future__ import annotations

import copy

import comfy.model_patcher
import torch

from ..precision.boundary import BoundaryForward
from ..precision.context import PrecisionContext, dtype_name
from ..precision.reach import is_storage_only, weights_device, weights_dtype
from ..precision.resolve import Resolution
from .copies import module_at_dtype
from .facts import resolution

KIND_ROLE = {"UPSCALE_MODEL": "intermediate", "CONTROL_NET": "unet", "CLIP_VISION": "text_encoder"}


def boundary_module(module: torch.nn.Module, want: Resolution, device) -> tuple[torch.nn.Module, str]:
    """A module running at `want.dtype` with casts at its boundary, and a note. Storage-only weights (fp8) are left
    to ComfyUI's per-layer casts, which already compute them at the input's dtype."""
    stored = weights_dtype(module)
    if stored is None or is_storage_only(stored):
        return module, f"weights {dtype_name(stored) if stored else 'none'}: left as they are"
    base, note = module, f"runs {dtype_name(stored)} (its weights)"
    if want.dtype != stored:
        base, fresh = module_at_dtype(module, want.dtype, device)
        note = f"weights converted once to {want.name} ({'made now' if fresh else 'reused'})"
    new = copy.copy(base)  # shares parameters and submodules; only its forward differs
    new.forward = BoundaryForward(base.forward, want.dtype)
    return new, note + f"; inputs cast to {want.name} at its boundary, outputs back to the caller's dtype"


def _want(ctx: PrecisionContext, kind: str, module) -> Resolution:
    return resolution(ctx, KIND_ROLE[kind], module)


def upscale_model_with_policy(model, ctx: PrecisionContext):
    """A copy of a spandrel ImageModelDescriptor whose network runs at the context's dtype, with boundary casts."""
    want = _want(ctx, "UPSCALE_MODEL", model.model)
    new = copy.copy(model)
    new._model, note = boundary_module(model.model, want, weights_device(model.model))
    return new, f"UPSCALE_MODEL copy: {note}"


def control_net_with_policy(control, ctx: PrecisionContext):
    """A copy of a ControlNet (and of each one it chains to) whose network runs at the context's dtype, with boundary
    casts. Controls without a network of their own (T2I adapters, control LoRAs) are copied as they are."""
    new = control.copy()
    notes = []
    module = getattr(control, "control_model", None)
    if isinstance(module, torch.nn.Module):
        want = _want(ctx, "CONTROL_NET", module)
        wrapped = getattr(control, "control_model_wrapped", None)
        offload = wrapped.offload_device if wrapped is not None else weights_device(module)
        new.control_model, note = boundary_module(module, want, offload)
        if new.control_model is not module and weights_dtype(new.control_model) != weights_dtype(module):
            new.control_model_wrapped = comfy.model_patcher.ModelPatcher(
                new.control_model, load_device=control.load_device, offload_device=offload)
        notes.append(f"{type(control).__name__}: {note}")
    else:
        notes.append(f"{type(control).__name__}: no network of its own, copied as it is")
    if control.previous_controlnet is not None:
        new.previous_controlnet, more = control_net_with_policy(control.previous_controlnet, ctx)
        notes.append(more)
    return new, "; ".join(notes)


def clip_vision_with_policy(clip_vision, ctx: PrecisionContext):
    """A copy of a ClipVisionModel whose network runs at the context's dtype, with boundary casts."""
    want = _want(ctx, "CLIP_VISION", clip_vision.model)
    new = copy.copy(clip_vision)
    new.model, note = boundary_module(clip_vision.model, want, clip_vision.patcher.offload_device)
    if new.model is not clip_vision.model and weights_dtype(new.model) != weights_dtype(clip_vision.model):
        new.patcher = comfy.model_patcher.ModelPatcher(new.model, load_device=clip_vision.load_device,
                                                       offload_device=clip_vision.patcher.offload_device)
        new.dtype = want.dtype
    return new, f"CLIP_VISION copy: {note}"


WITH_POLICY = {"UPSCALE_MODEL": upscale_model_with_policy, "CONTROL_NET": control_net_with_policy,
               "CLIP_VISION": clip_vision_with_policy}
