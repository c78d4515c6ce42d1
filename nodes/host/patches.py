"""A MODEL's patches (attn1/attn2/output patches, block replacements, wrappers) and running them at the model's
compute dtype on a clone.

Another pack's patch may hold weights in another dtype than the UNet computes in (an fp16 projection on an fp32
UNet, fp8 motion weights beside an fp8 UNet): the UNet then hands it tensors it cannot mix with its own. On a clone,
each such patch is replaced by one that casts at its boundary (inputs to the patch's dtype, outputs back to the
UNet's), or, when its weights are a storage-only format (fp8) nothing computes in, by one holding a copy of its
weights at the compute dtype. The model given, and the patch objects, are never changed.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch

from ..precision.boundary import PatchAtBoundary
from ..precision.context import dtype_name
from ..precision.reach import held, is_storage_only, weights_dtype
from .copies import module_at_dtype
from .facts import model_compute_dtype


def model_patches(model) -> list[tuple[str, object, tuple]]:
    """(name, patch, where) for every patch on a MODEL: where is the path to it in transformer_options."""
    options = getattr(model, "model_options", {})
    to = options.get("transformer_options", {})
    found = []
    for name, patches in (to.get("patches") or {}).items():
        for i, p in enumerate(patches):
            found.append((f"{name}[{i}]", p, ("patches", name, i)))
    for name, blocks in (to.get("patches_replace") or {}).items():
        for key, p in blocks.items():
            found.append((f"{name} replace {key}", p, ("patches_replace", name, key)))
    if options.get("model_function_wrapper") is not None:
        found.append(("model_function_wrapper", options["model_function_wrapper"], ()))
    for kind, by_key in (getattr(model, "wrappers", None) or {}).items():
        for key, fns in by_key.items():
            for i, fn in enumerate(fns):
                found.append((f"wrapper {kind} {key}[{i}]", fn, ()))
    return found


def patch_at_dtype(patch, dtype: torch.dtype):
    """A copy of `patch` whose storage-only weights are at `dtype` (a module: the cached weight copy; an object: a
    shallow copy with those attributes converted), or None when it holds them nowhere it can be copied."""
    if isinstance(patch, torch.nn.Module):
        return module_at_dtype(patch, dtype, next((t.device for t in patch.parameters()), "cpu"))[0]
    owner = getattr(patch, "__self__", None)
    if isinstance(owner, torch.nn.Module) and getattr(patch, "__func__", None) is not None:
        new_owner = patch_at_dtype(owner, dtype)
        return getattr(new_owner, patch.__func__.__name__)
    if not hasattr(patch, "__dict__") or callable(getattr(patch, "__code__", None)):
        return None
    new, changed = copy.copy(patch), False
    for k, v in vars(patch).items():
        if isinstance(v, torch.nn.Module) and is_storage_only(weights_dtype(v)):
            setattr(new, k, patch_at_dtype(v, dtype))
            changed = True
        elif isinstance(v, torch.Tensor) and is_storage_only(v.dtype):
            setattr(new, k, v.to(dtype))
            changed = True
    return new if changed else None


def cast_patches_at_boundary(model) -> Optional[str]:
    """On `model` (a clone the caller owns): every attn/output/block patch whose weights are in another dtype than
    the model computes in runs at its boundary casts (or from a copy at the compute dtype, for fp8 weights).
    Returns a note naming them, or None when every patch already agrees."""
    compute = model_compute_dtype(model)
    to = model.model_options.get("transformer_options", {})
    done = []
    for name, patch, where in model_patches(model):
        if not where or isinstance(patch, PatchAtBoundary):
            continue
        own = weights_dtype(patch)
        if own is None or own == compute:
            continue
        if is_storage_only(own):
            converted = patch_at_dtype(patch, compute)
            if converted is None:
                continue
            new, how = PatchAtBoundary(converted, compute), f"{dtype_name(own)} weights copied to {dtype_name(compute)}"
        else:
            new, how = PatchAtBoundary(patch, own), f"runs {dtype_name(own)}, cast at its boundary"
        section, group, key = where
        to[section][group][key] = new
        done.append(f"{name} ({type(patch).__name__}: {how})")
    return f"patches at the UNet's {dtype_name(compute)}: " + "; ".join(done) if done else None


def patch_modules(model) -> dict:
    """name -> the patch (or what it holds) for naming a patch in a dtype error: a module, or the patch object."""
    out = {}
    for name, patch, _ in model_patches(model):
        target = patch.patch if isinstance(patch, PatchAtBoundary) else patch
        modules = [o for o in held(target) if isinstance(o, torch.nn.Module)]
        out[f"patch {name}"] = modules[0] if len(modules) == 1 and modules[0] is target else target
    return out
