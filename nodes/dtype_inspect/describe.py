"""Describe any graph value (MODEL, CLIP, VAE, LATENT, IMAGE, MASK, CONDITIONING, tensors) for DtypeInspect.

Model dtypes are read from attributes ComfyUI keeps, never by scanning weights, so this is flat in model size.
Each description is a list of rows; a row's `role` says which context role it is checked against, and the resolver
says what that role resolves to for the row's object, so `auto` agrees with whatever ComfyUI chose.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from ..host.facts import model_compute_dtype, model_storage, resolution, text_encoder_dtype
from ..precision.context import PrecisionContext, dtype_name
from ..precision.reach import describe_formats
from ..precision.stats import format_stats, tensor_stats


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    info: dict  # what is shown (dtype/storage/compute, device, shape, statistics)
    role: Optional[str] = None  # the context role it is checked against
    obj: Any = None  # the MODEL / CLIP / VAE the role resolves for (None for tensors)
    current: Optional[torch.dtype] = None  # the dtype it runs at / holds now
    problems: tuple = ()  # what is wrong with it whatever the context says (packed weights no op dequantizes)


def _tensor_row(label: str, kind: str, t: torch.Tensor) -> Row:
    return Row(label, {"kind": kind, **tensor_stats(t)}, "intermediate", None, t.dtype)


def _model_rows(model):
    """One row for the MODEL (its storage formats, the dtype it computes in); with quantized weights, one row per layer
    group too: the formats it holds, how many values each, the dtype its ops dequantize them to."""
    compute = model_compute_dtype(model)
    found = model_storage(model)
    formats = found.formats()
    storage = " + ".join(s.format for s in formats) if formats else dtype_name(model.model_dtype())
    info = {"kind": "MODEL", "storage": storage, "compute": dtype_name(compute), "device": str(model.load_device)}
    if found.dequant:
        info["layouts_dequantize_to"] = ",".join(sorted(dtype_name(d) for d in found.dequant))
    problems = tuple(f"model weight '{name}' is packed GGUF storage held by a module that is not a ComfyUI op: "
                     "nothing dequantizes it there, so a matmul meets its bytes" for name in found.unhandled[:3])
    rows = [Row("model", info, "unet", model, compute, problems)]
    if found.any_quantized:
        for group in found.groups:
            rows.append(Row(f"model.{group}", {"kind": "MODEL", "formats": describe_formats(found.formats(group)),
                                               "compute": dtype_name(compute)}))
    return rows


def _clip_rows(clip):
    dtypes = sorted(dtype_name(d) for d in getattr(clip.cond_stage_model, "dtypes", set()) or [])
    held = text_encoder_dtype(clip)
    info = {"kind": "CLIP", "storage": ",".join(dtypes) or "unknown", "compute": dtype_name(held),
            "device": str(clip.patcher.load_device)}
    return [Row("clip", info, "text_encoder", clip, held)]


def _vae_rows(vae):
    info = {"kind": "VAE", "storage": dtype_name(vae.vae_dtype), "compute": dtype_name(vae.vae_dtype),
            "device": str(vae.device)}
    return [Row("vae", info, "vae", vae, vae.vae_dtype)]


def describe(value) -> list[Row]:
    """Rows describing `value`; tensors get full statistics, models only cheap attributes."""
    if isinstance(value, torch.Tensor):
        kind = "IMAGE" if value.ndim == 4 and value.shape[-1] in (1, 3, 4) else \
               "MASK" if value.ndim in (2, 3) else "tensor"
        return [_tensor_row(kind.lower(), kind, value)]
    if isinstance(value, dict) and isinstance(value.get("samples"), torch.Tensor):
        rows = [_tensor_row("latent", "LATENT", value["samples"])]
        if isinstance(value.get("noise_mask"), torch.Tensor):
            rows.append(_tensor_row("noise_mask", "MASK", value["noise_mask"]))
        return rows
    if isinstance(value, list) and value and all(isinstance(c, (list, tuple)) and len(c) == 2 for c in value):
        rows = []
        for i, (cond, extra) in enumerate(value):
            rows.append(_tensor_row(f"cond[{i}]", "CONDITIONING", cond))
            pooled = extra.get("pooled_output") if isinstance(extra, dict) else None
            if isinstance(pooled, torch.Tensor):
                rows.append(_tensor_row(f"cond[{i}].pooled", "CONDITIONING", pooled))
        return rows
    if isinstance(value, PrecisionContext):
        return [Row("context", {"kind": "PRECISION_CONTEXT", **value.to_dict()})]
    if hasattr(value, "model_options") and hasattr(value, "model"):
        return _model_rows(value)
    if hasattr(value, "cond_stage_model") and hasattr(value, "patcher"):
        return _clip_rows(value)
    if hasattr(value, "first_stage_model") and hasattr(value, "vae_dtype"):
        return _vae_rows(value)
    return [Row("value", {"kind": type(value).__name__})]


def flags(rows: list[Row], ctx: PrecisionContext) -> list[str]:
    """What disagrees with the context: a dtype other than what the role resolves to for it, or NaN/Inf values."""
    out = []
    for row in rows:
        info = row.info
        if info.get("nan") or info.get("inf"):
            out.append(f"{row.label} holds {info['nan']} NaN and {info['inf']} Inf values")
        out += row.problems
        if row.role is None or row.current is None:
            continue
        want = resolution(ctx, row.role, row.obj, device=info.get("device") if row.obj is None else None)
        if row.current != want.dtype:
            out.append(f"{row.label} is {dtype_name(row.current)} but the context expects {want.name} for role "
                       f"'{row.role}' ({want.reason})")
    return out


def report_text(rows: list[Row], flagged: list[str], ctx_source: str) -> str:
    lines = []
    for row in rows:
        label, info = row.label, row.info
        if "dtype" in info:
            lines.append(f"{info['kind']} " + format_stats(label, info))
        else:
            rest = " ".join(f"{k} {v}" for k, v in info.items() if k != "kind")
            lines.append(f"{info['kind']} {label}: {rest}")
    lines.append(f"context: {ctx_source}")
    lines += [f"MISMATCH {f}" for f in flagged] or ["agrees with the context"]
    return "\n".join(lines)

