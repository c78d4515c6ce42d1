"""What weights a callable holds: the modules and tensors reachable from a patch, a wrapper or a module, for naming
its dtype in messages and for running it at another dtype. Pure torch; a bounded walk (no recursion into modules)."""
from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Iterator, Optional

import torch

from .context import dtype_name

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


# -- quantized storage: a tensor's `.dtype` is how it is stored, not what its layer computes in ---------------------

_GGUF_PLAIN = {"F32", "F16"}  # GGUF types held as tensors of their values; every other type is packed blocks
_SCALES = ("scale_weight", "weight_scale")  # an fp8 layer's per-tensor scale (ComfyUI's scaled fp8 / quant layouts)
_NOT_WEIGHTS = {"scale_weight", "weight_scale", "scale_input", "input_scale"}


@dataclasses.dataclass(frozen=True)
class Storage:
    """How one weight tensor is stored. `quantized`: its values are not a plain tensor of its dtype's, only its
    layer's ops make compute-dtype weights of it (GGUF blocks, ComfyUI QuantizedTensor layouts, fp8 with or without a
    scale); `packed`: not even its shape is its values' (GGUF blocks), so plain torch code cannot use it at all;
    `scaled`: its values are the stored ones times a scale its layer keeps (scaled fp8, QuantizedTensor layouts)."""

    format: str
    quantized: bool = False
    packed: bool = False
    scaled: bool = False


def storage_of(t: torch.Tensor, owner=None) -> Storage:
    """The storage format of tensor `t`, held by module `owner` (its scale tells scaled fp8 from plain fp8)."""
    gguf_type = getattr(t, "tensor_type", None)
    if gguf_type is not None:  # ComfyUI-GGUF's GGMLTensor
        name = getattr(gguf_type, "name", str(gguf_type))
        packed = name not in _GGUF_PLAIN
        return Storage(f"GGUF {name}", packed, packed)
    layout = getattr(t, "_layout_type", None)
    if layout is not None:  # ComfyUI's QuantizedTensor
        return Storage(f"{layout} ({dtype_name(t.dtype)})", True, False, True)
    if is_storage_only(t.dtype):
        scaled = any(isinstance(getattr(owner, s, None), torch.Tensor) for s in _SCALES)
        return Storage(dtype_name(t.dtype) + (" scaled" if scaled else ""), True, False, scaled)
    return Storage(dtype_name(t.dtype))


def logical_numel(t: torch.Tensor) -> int:
    """How many values a tensor holds (a GGUF tensor's `.shape` is its logical shape, its numel the bytes')."""
    n = 1
    for s in t.shape:
        n *= int(s)
    return n


@dataclasses.dataclass(frozen=True)
class Census:
    """Storage formats of a network's weights: per layer group (the network's top-level children), Storage ->
    (tensors, values); `dequant`: the dtypes its QuantizedTensors name as theirs; `unhandled`: packed tensors held
    by a module that is not a ComfyUI op (nothing dequantizes them there: a plain matmul meets the bytes)."""

    groups: dict
    dequant: frozenset = frozenset()
    unhandled: tuple = ()

    def formats(self, group: Optional[str] = None) -> dict:
        """Storage -> (tensors, values), most values first, of one group or of all."""
        total: dict = {}
        for g, formats in self.groups.items():
            if group is None or g == group:
                for fmt, (n, values) in formats.items():
                    t = total.get(fmt, (0, 0))
                    total[fmt] = (t[0] + n, t[1] + values)
        return dict(sorted(total.items(), key=lambda kv: -kv[1][1]))

    def quantized(self) -> dict:
        return {s: c for s, c in self.formats().items() if s.quantized}

    def plain(self) -> dict:
        return {s: c for s, c in self.formats().items() if not s.quantized}

    @property
    def any_quantized(self) -> bool:
        return any(s.quantized for s in self.formats())

    @property
    def copyable(self) -> bool:
        """Whether a copy at another dtype keeps the values: plain floats and unscaled fp8 (a cast); never GGUF
        blocks, QuantizedTensors or scaled fp8 (their values need their ops)."""
        return not any(s.packed or s.scaled for s in self.formats())


def census(module: torch.nn.Module) -> Census:
    """The storage formats of `module`'s weights, per top-level child: a walk over the parameters' attributes, no
    weight is read (a GGUF model's packed tensors are counted by their logical shape)."""
    groups: dict = {}
    dequant, unhandled, seen = set(), [], set()
    for path, m in module.named_modules():
        for name, t in itertools.chain(m.named_parameters(recurse=False), m.named_buffers(recurse=False)):
            if t is None or id(t) in seen or name in _NOT_WEIGHTS or not (t.is_floating_point() or
                                                                           hasattr(t, "tensor_type")):
                continue
            seen.add(id(t))
            s = storage_of(t, m)
            group = path.split(".")[0] if path else name
            n, values = groups.setdefault(group, {}).get(s, (0, 0))
            groups[group][s] = (n + 1, values + logical_numel(t))
            orig = getattr(t, "_layout_params", {}).get("orig_dtype") if hasattr(t, "_layout_type") else None
            if orig is not None:
                dequant.add(orig)
            if s.packed and not hasattr(m, "comfy_cast_weights"):
                unhandled.append(f"{path}.{name}" if path else name)
    return Census(groups, frozenset(dequant), tuple(unhandled))


def _count(values: int) -> str:
    return f"{values / 1e6:.2f} M" if values >= 10_000 else str(values)


def describe_formats(formats: dict) -> str:
    """'GGUF Q8_0 (47 tensors, 13.43 M values) + GGUF F16 (...)' for a Census.formats() mapping."""
    return " + ".join(f"{s.format} ({n} tensor{'s' if n != 1 else ''}, {_count(v)} values)"
                      for s, (n, v) in formats.items())
