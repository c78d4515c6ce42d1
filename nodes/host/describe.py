"""Describe any graph value (MODEL, CLIP, VAE, LATENT, IMAGE, MASK, CONDITIONING, tensors) for DtypeInspect.

Model dtypes are read from attributes ComfyUI keeps, never by scanning weights, so this is flat in model size.
Each description is a list of (label, info, role) rows; `role` says which context role the row is checked against.
"""
from __future__ import annotations

import torch

from ..precision.context import PrecisionContext, dtype_name
from ..precision.stats import format_stats, tensor_stats
from .attach import model_compute_dtype


def _model_rows(model):
    info = {"kind": "MODEL", "storage": dtype_name(model.model_dtype()),
            "compute": dtype_name(model_compute_dtype(model)), "device": str(model.load_device)}
    return [("model", info, "unet")]


def _clip_rows(clip):
    dtypes = sorted(dtype_name(d) for d in getattr(clip.cond_stage_model, "dtypes", set()) or [])
    info = {"kind": "CLIP", "storage": ",".join(dtypes) or "unknown", "device": str(clip.patcher.load_device)}
    return [("clip", info, None)]


def _vae_rows(vae):
    info = {"kind": "VAE", "storage": dtype_name(vae.vae_dtype), "compute": dtype_name(vae.vae_dtype),
            "device": str(vae.device)}
    return [("vae", info, "vae")]


def describe(value) -> list[tuple[str, dict, str | None]]:
    """Rows describing `value`; tensors get full statistics, models only cheap attributes."""
    if isinstance(value, torch.Tensor):
        kind = "IMAGE" if value.ndim == 4 and value.shape[-1] in (1, 3, 4) else \
               "MASK" if value.ndim in (2, 3) else "tensor"
        return [(kind.lower(), {"kind": kind, **tensor_stats(value)}, "intermediate")]
    if isinstance(value, dict) and isinstance(value.get("samples"), torch.Tensor):
        rows = [("latent", {"kind": "LATENT", **tensor_stats(value["samples"])}, "intermediate")]
        if isinstance(value.get("noise_mask"), torch.Tensor):
            rows.append(("noise_mask", {"kind": "MASK", **tensor_stats(value["noise_mask"])}, "intermediate"))
        return rows
    if isinstance(value, list) and value and all(isinstance(c, (list, tuple)) and len(c) == 2 for c in value):
        rows = []
        for i, (cond, extra) in enumerate(value):
            rows.append((f"cond[{i}]", {"kind": "CONDITIONING", **tensor_stats(cond)}, "intermediate"))
            pooled = extra.get("pooled_output") if isinstance(extra, dict) else None
            if isinstance(pooled, torch.Tensor):
                rows.append((f"cond[{i}].pooled", {"kind": "CONDITIONING", **tensor_stats(pooled)}, "intermediate"))
        return rows
    if isinstance(value, PrecisionContext):
        return [("context", {"kind": "PRECISION_CONTEXT", **value.to_dict()}, None)]
    if hasattr(value, "model_options") and hasattr(value, "model"):
        return _model_rows(value)
    if hasattr(value, "cond_stage_model") and hasattr(value, "patcher"):
        return _clip_rows(value)
    if hasattr(value, "first_stage_model") and hasattr(value, "vae_dtype"):
        return _vae_rows(value)
    return [("value", {"kind": type(value).__name__}, None)]


def flags(rows, ctx: PrecisionContext) -> list[str]:
    """What disagrees with the context: a dtype other than the role's, or NaN/Inf values."""
    out = []
    for label, info, role in rows:
        if info.get("nan") or info.get("inf"):
            out.append(f"{label} holds {info['nan']} NaN and {info['inf']} Inf values")
        if role is None:
            continue
        device = torch.device(info["device"]) if "device" in info else torch.device("cpu")
        expected = dtype_name(ctx.dtype_for(role, device))
        found = info.get("compute", info.get("dtype"))
        if found is not None and found != expected:
            out.append(f"{label} is {found} but the context expects {expected} for role '{role}'")
    return out


def report_text(rows, flagged: list[str], ctx_source: str) -> str:
    lines = []
    for label, info, _ in rows:
        if "dtype" in info:
            lines.append(f"{info['kind']} " + format_stats(label, info))
        else:
            rest = " ".join(f"{k} {v}" for k, v in info.items() if k != "kind")
            lines.append(f"{info['kind']} {label}: {rest}")
    lines.append(f"context: {ctx_source}")
    lines += [f"MISMATCH {f}" for f in flagged] or ["agrees with the context"]
    return "\n".join(lines)

