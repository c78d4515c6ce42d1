"""Describe a tensor for DtypeInspect: dtype, device, shape, range and non-finite counts."""
from __future__ import annotations

import torch

from .context import dtype_name
from .finite import nonfinite_counts


def tensor_stats(x: torch.Tensor) -> dict:
    info = {"dtype": dtype_name(x.dtype), "device": str(x.device), "shape": list(x.shape)}
    if x.is_floating_point() and x.numel() > 0:
        nan, inf = nonfinite_counts(x)
        finite = x[torch.isfinite(x)].float() if (nan or inf) else x.float()
        info.update(nan=nan, inf=inf)
        if finite.numel():
            info.update(min=float(finite.min()), max=float(finite.max()), mean=float(finite.mean()))
    return info


def format_stats(name: str, info: dict) -> str:
    line = f"{name}: {info['dtype']} {info['device']} {tuple(info['shape'])}"
    if "min" in info:
        line += f" min {info['min']:.4g} max {info['max']:.4g} mean {info['mean']:.4g}"
    if info.get("nan") or info.get("inf"):
        line += f"  NaN {info['nan']} Inf {info['inf']} !"
    elif "nan" in info:
        line += "  finite"
    return line
