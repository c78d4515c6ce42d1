"""Copies of torch modules with their weights at another dtype; the module given is never changed."""
from __future__ import annotations

import copy
import itertools
from typing import Callable, Mapping, Optional

import torch


def cast_module_copy(module: torch.nn.Module, dtype: torch.dtype, *, device=None,
                     originals: Optional[Mapping[str, torch.Tensor]] = None,
                     select: Callable[[str, torch.Tensor], bool] = lambda name, t: True,
                     keep: tuple = ()) -> torch.nn.Module:
    """A deep copy of `module` whose selected float parameters/buffers are at `dtype` (each tensor copied once).

    `originals`: name -> tensor to copy instead of the module's current one (weights a caller knows to be patched in
    place). `select(name, tensor)` picks the float tensors to cast (the others are copied as they are). `keep`: objects the copy
    must refer to as they are instead of copying them (back-references to owners). Modules that cache their dtype
    as a plain `dtype` attribute get the new one when any of their own tensors was cast.
    """
    originals = originals or {}
    memo = {id(o): o for o in keep}
    cast = set()  # ids of the tensors cast to `dtype`
    for mod_name, mod in module.named_modules(remove_duplicate=False):
        for name, t in itertools.chain(mod.named_parameters(recurse=False), mod.named_buffers(recurse=False)):
            if t is None or id(t) in memo:
                continue
            full = f"{mod_name}.{name}" if mod_name else name
            src = originals.get(full, t).detach()
            if t.is_floating_point() and select(full, t):
                new = src.to(device=device, dtype=dtype, copy=True)
                cast.add(id(t))
            else:
                new = src.to(device=device, copy=True)
            memo[id(t)] = torch.nn.Parameter(new, requires_grad=False) if isinstance(t, torch.nn.Parameter) else new
    new_module = copy.deepcopy(module, memo)
    for old, new in zip(module.modules(), new_module.modules()):
        cached = new.__dict__.get("dtype")
        if isinstance(cached, torch.dtype) and cached.is_floating_point and any(
                id(t) in cast for t in itertools.chain(old.parameters(), old.buffers())):
            new.dtype = dtype
    return new_module
