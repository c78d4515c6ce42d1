"""What weights a callable holds: the modules and tensors reachable from a patch, a wrapper or a module, for naming
its dtype in messages and for running it at another dtype. Pure torch; a bounded walk (no recursion into modules)."""
from __future__ import annotations

import functools
from typing import Iterator, Optional

import torch

_STORAGE_ONLY = {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
                 if hasattr(torch, n)}


def held(obj, depth: int = 2) -> Iterator:
    """Modules and tensors `obj` holds: itself, a bound method's owner, a partial's function and arguments, a
    closure's cells, an object's attributes, and list/tuple/dict items, `depth` levels down."""
    seen: set = set()

    def walk(o, d):
        if id(o) in seen or o is None or isinstance(o, (str, bytes, int, float, bool, type)):
            return
        seen.add(id(o))
        if isinstance(o, (torch.nn.Module, torch.Tensor)):
            yield o
            return
        if d < 0:
            return
        children = []
        if isinstance(o, functools.partial):
            children = [o.func, *o.args, *o.keywords.values()]
        elif hasattr(o, "__self__") and hasattr(o, "__func__"):
            children = [o.__self__, o.__func__]
        elif callable(o) and getattr(o, "__closure__", None):
            children = [c.cell_contents for c in o.__closure__ if c.cell_contents is not None]
        elif isinstance(o, (list, tuple, set)):
            children = list(o)
        elif isinstance(o, dict):
            children = list(o.values())
        elif hasattr(o, "__dict__") and not callable(getattr(o, "__code__", None)):
            children = list(vars(o).values())
        for c in children:
            yield from walk(c, d - 1)

    yield from walk(obj, depth)


def float_dtypes(obj) -> list[torch.dtype]:
    """The float dtypes of the weights `obj` holds, most common first."""
    counts: dict = {}
    for o in held(obj):
        tensors = o.parameters() if isinstance(o, torch.nn.Module) else (o,)
        for t in tensors:
            if t.is_floating_point():
                counts[t.dtype] = counts.get(t.dtype, 0) + t.numel()
    return sorted(counts, key=counts.get, reverse=True)


def weights_dtype(obj) -> Optional[torch.dtype]:
    """The dtype most of the weights `obj` holds are in (None: it holds none)."""
    dtypes = float_dtypes(obj)
    return dtypes[0] if dtypes else None


def weights_device(module: torch.nn.Module) -> torch.device:
    """Where a module's weights are (the CPU for one without any)."""
    return next((t.device for t in module.parameters()), torch.device("cpu"))


def is_storage_only(dtype: Optional[torch.dtype]) -> bool:
    """fp8 and similar: weights are stored in it and computed from through casts, never computed in it."""
    return dtype in _STORAGE_ONLY
