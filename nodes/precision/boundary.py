"""Casts at a network's boundary: every float tensor going in at the dtype of the network's weights, every float
tensor coming out back at the dtype of the caller's input. Pure torch; the ComfyUI objects that use it are in
nodes/host/boundary_copies.py and nodes/host/patches.py."""
from __future__ import annotations

import copy
from typing import Optional

import torch


def cast_tree(value, dtype: torch.dtype):
    """`value` with every float tensor in it (through tuples, lists and dicts) at `dtype`; the rest as it is."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(cast_tree(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: cast_tree(v, dtype) for k, v in value.items()}
    return value


def cast_args(values, dtype: torch.dtype):
    """Top-level float tensors (and tuples/lists of them) at `dtype`; dicts of options are passed as they are."""
    return type(values)(cast_tree(v, dtype) if not isinstance(v, dict) else v for v in values)


def first_float(values) -> Optional[torch.Tensor]:
    for v in values:
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v
    return None


class BoundaryForward:
    """A module's forward with the casts at its boundary (set on a shallow copy of the module, so the module itself
    and its other users keep their forward)."""

    def __init__(self, forward, dtype: torch.dtype):
        self.forward, self.dtype = forward, dtype

    def __call__(self, *args, **kwargs):
        first = first_float(list(args) + list(kwargs.values()))
        out = self.forward(*cast_args(args, self.dtype),
                           **dict(zip(kwargs, cast_args(list(kwargs.values()), self.dtype))))
        return cast_tree(out, first.dtype) if first is not None and first.dtype != self.dtype else out


class PatchAtBoundary:
    """A patch called with its tensor arguments at `dtype`; tensors it returns go back at the caller's dtype.

    ComfyUI moves patches that have `.to` with the model when it loads it, to its device and to its *storage* dtype
    (so an fp8-stored UNet would cast a patch to fp8): this one follows device moves and keeps its dtype."""

    def __init__(self, patch, dtype: torch.dtype):
        self.patch, self.dtype = patch, dtype

    def to(self, target):
        if isinstance(target, torch.dtype) or not hasattr(self.patch, "to"):
            return self
        return PatchAtBoundary(self.patch.to(target), self.dtype)

    def __call__(self, *args, **kwargs):
        first = first_float(args)
        out = self.patch(*cast_args(args, self.dtype), **kwargs)
        return cast_tree(out, first.dtype) if first is not None and first.dtype != self.dtype else out

    def __deepcopy__(self, memo):  # ModelPatcher.clone deep-copies model_options: copy the patch as it would be
        return PatchAtBoundary(copy.deepcopy(self.patch, memo), self.dtype)
