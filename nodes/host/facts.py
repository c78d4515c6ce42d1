"""Facts about ComfyUI objects for the one resolver (nodes/precision/resolve.py), and the entry point every node uses.

`resolution(ctx, role, obj)` answers "at which dtype does this role run for this MODEL / CLIP / VAE / tensor, and
why". What ComfyUI chose is read from attributes it keeps (never by reading weights), so asking is cheap.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Optional

import comfy.model_management as mm
import torch

from ..precision.context import ROLES, PrecisionContext, bf16_supported
from ..precision.memo import PerSource
from ..precision.reach import Census, census, is_storage_only, weights_device, weights_dtype
from ..precision.resolve import Facts, Resolution, resolve
from .fp16_verdict import vae_fp16_verdict


def model_compute_dtype(model) -> torch.dtype:
    """What a MODEL computes in: its manual-cast dtype if set, else its weights' dtype.

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


_CENSUS = PerSource()  # network -> "census" -> its Census, valid for its first parameter (_census_key)


def _census_key(net: torch.nn.Module) -> tuple:
    first = next(net.parameters(), None)
    return (id(first), getattr(first, "dtype", None), type(first).__name__)


def model_storage(model) -> Census:
    """The storage formats of a MODEL's diffusion model, per layer group (GGUF types, fp8 with or without scales,
    QuantizedTensor layouts, plain dtypes): a walk over its parameters' attributes, no weight is read.

    Walked once per network (a few ms for an SD1.5 UNet, asked by every clone and conform step): ComfyUI's weight
    patching writes patched weights back at their stored dtype and layout, so the formats belong to the network as
    loaded; a network converted in place (`.to(dtype)`) changes its first parameter's dtype and is walked again."""
    net = getattr(model.model, "diffusion_model", model.model)
    return _CENSUS.current(net, "census", _census_key(net), lambda: census(net))


def storage_summary(found: Census) -> str:
    """'GGUF Q8_0 + GGUF F32 + GGUF F16' when some weights are quantized, else ''."""
    return " + ".join(s.format for s in found.formats()) if found.any_quantized else ""


def text_encoder_dtype(clip) -> Optional[torch.dtype]:
    """The dtype ComfyUI holds a CLIP's text encoder(s) in (its `--*-text-enc` flags set exactly this); the widest
    when several encoders differ (e.g. fp8 T5 beside an fp16 CLIP-L)."""
    dtypes = [d for d in (getattr(clip.cond_stage_model, "dtypes", None) or ()) if d is not None]
    if not dtypes:
        return clip.patcher.model_dtype()
    return max(dtypes, key=lambda d: (not is_storage_only(d), torch.finfo(d).bits if d.is_floating_point else 0))


def intermediate_dtype() -> torch.dtype:
    """ComfyUI's dtype for IMAGE/LATENT between nodes (newer cores can make it fp16; 0.3.x always fp32)."""
    pick = getattr(mm, "intermediate_dtype", None)
    return pick() if callable(pick) else torch.float32


def _device(device) -> torch.device:
    return torch.device(device) if device is not None else mm.get_torch_device()


def _vae_verdict(vae):
    def why() -> Optional[str]:
        verdict = vae_fp16_verdict(vae)  # probes once per set of weights, only when asked
        return verdict.describe() if verdict is not None and not verdict.safe else None
    return why


def _module_facts(module: torch.nn.Module) -> Facts:
    """A bare network (an upscale model's, a ControlNet's, a CLIP vision encoder's): ComfyUI computes it at the dtype
    its weights are in."""
    dev = weights_device(module)
    dtype = weights_dtype(module)
    return Facts(dev, dtype, dtype, bf16_supported(dev), f"this {type(module).__name__}")


@dataclasses.dataclass(frozen=True)
class NodeClass:
    """A core or third-party node class a value is conformed for (enforce downstream), and how messages name it."""

    cls: type
    label: str  # "ImageBlur #9"


def held_weights_dtype(cls: type) -> Optional[torch.dtype]:
    """The dtype of the torch modules a node class holds itself: class attributes (its whole MRO) and globals of
    the module defining it. None when it holds none (most nodes: their networks come in through inputs)."""
    namespaces = [vars(c) for c in cls.__mro__ if c is not object]
    module = sys.modules.get(cls.__module__)
    if module is not None:
        namespaces.append(vars(module))
    return weights_dtype([v for ns in namespaces for v in list(ns.values()) if isinstance(v, torch.nn.Module)])


def facts(role: str, obj=None, device=None) -> Facts:
    """What ComfyUI chose for `obj` in `role` (or, without an object, what it would choose on the device)."""
    if isinstance(obj, torch.nn.Module):
        return _module_facts(obj)
    if role == "intermediate" and isinstance(obj, NodeClass):
        dev = _device(device if device is not None else mm.intermediate_device())
        return Facts(dev, intermediate_dtype(), held_weights_dtype(obj.cls), bf16_supported(dev), obj.label,
                     foreign=True)
    if role == "unet":
        if obj is not None:
            dev = torch.device(obj.load_device)
            return Facts(dev, model_compute_dtype(obj), obj.model_dtype(), bf16_supported(dev), "this MODEL",
                         storage=storage_summary(model_storage(obj)))
        dev = _device(device)
        return Facts(dev, mm.unet_dtype(dev), None, bf16_supported(dev), "a model on this device")
    if role == "vae":
        if obj is not None:
            dev = torch.device(obj.device)
            return Facts(dev, obj.vae_dtype, obj.vae_dtype, bf16_supported(dev), "this VAE", _vae_verdict(obj))
        dev = _device(device if device is not None else mm.vae_device())
        return Facts(dev, mm.vae_dtype(dev, [torch.bfloat16, torch.float32]), None, bf16_supported(dev),
                     "an SD VAE on this device")
    if role == "text_encoder":
        if obj is not None:
            dev = torch.device(obj.patcher.load_device)
            te = text_encoder_dtype(obj)
            return Facts(dev, te, te, bf16_supported(dev), "this CLIP")
        dev = _device(device if device is not None else mm.text_encoder_device())
        return Facts(dev, mm.text_encoder_dtype(dev), None, bf16_supported(dev), "a text encoder on this device")
    if role == "intermediate":
        dev = _device(device if device is not None else mm.intermediate_device())
        return Facts(dev, intermediate_dtype(), None, bf16_supported(dev), "IMAGE/LATENT between nodes")
    dev = _device(device)
    return Facts(dev, None, None, bf16_supported(dev), f"the {role}")


def resolution(ctx: PrecisionContext, role: str, obj=None, device=None) -> Resolution:
    """The dtype `role` runs at for `obj` (a MODEL, CLIP, VAE, or None) on its device: the one decision."""
    return resolve(ctx, role, facts(role, obj, device))


def table(ctx: PrecisionContext, objects: dict) -> list[Resolution]:
    """The resolution of every role, each for its object in `objects` (role -> MODEL/CLIP/VAE) when given."""
    return [resolution(ctx, role, objects.get(role)) for role in ROLES]


def describe_table(resolutions: list[Resolution]) -> str:
    return "\n".join(r.text() for r in resolutions)

