"""Conform one graph value to a precision context, for a node that did not ask for it (enforce downstream).

Tensors (IMAGE, MASK, LATENT, CONDITIONING) are cast to what the consumer can take, as the resolver decides for it
(`intermediate` for that node: the dtype of the weights it holds itself, else ComfyUI's IMAGE/LATENT dtype, what core
and third-party nodes are written for), and the cast recorded, or refused in `error` mode; models come back as clones carrying the context, running at its dtypes and, where the pack
has one, with the guard that explains a dtype error in the pack's words. Values that are not what their type says
(another pack's own structures) pass through untouched: enforcement never breaks a graph that runs stock. Nothing
given is changed.
"""
from __future__ import annotations

import dataclasses

import torch

from ..host.attach import clip_with_policy, model_with_policy, vae_with_policy
from ..host.boundary_copies import WITH_POLICY, control_net_with_policy
from ..host.dtype_guard import GuardInfo, guard_model, guard_vae
from ..host.facts import NodeClass, resolution
from ..host.patches import cast_patches_at_boundary
from ..precision.conform import conform
from ..precision.context import PrecisionContext, dtype_name
from ..precision.errors import PrecisionError
from ..precision.report import PrecisionRecord


@dataclasses.dataclass(frozen=True)
class Step:
    """One input of one node being conformed: for messages and records."""

    node: str  # "KSampler #7"
    consumer: NodeClass  # the node class the value goes to
    input_name: str
    policy: str  # "Precision Policy #4"
    ctx: PrecisionContext
    record: PrecisionRecord
    guard: GuardInfo


def _tensor(x, step: Step, name: str):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return x
    want = resolution(step.ctx, "intermediate", step.consumer, device=x.device)
    if x.dtype == want.dtype:
        return x
    if step.ctx.on_mismatch == "error":
        raise PrecisionError(
            step.node, f"got {dtype_name(x.dtype)} but {step.policy} (enforce downstream) expects {want.name} "
                       f"({want.reason}).",
            f"set on_mismatch to 'cast' on {step.policy}: the input is converted to {want.name} before this node "
            "runs and the cast is recorded.", name)
    return conform(x, want, "cast", x.device, record=step.record, input_name=name)


def _latent(value, step: Step):
    if not isinstance(value, dict):
        return value
    return {k: _tensor(v, step, f"{step.input_name}.{k}") if isinstance(v, torch.Tensor) else v
            for k, v in value.items()}


def _conditioning(value, step: Step):
    if not isinstance(value, list):
        return value
    out = []
    for i, item in enumerate(value):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], dict)):
            out.append(item)
            continue
        cond, extra = item
        extra = dict(extra)
        for k, v in extra.items():
            if isinstance(v, torch.Tensor):
                extra[k] = _tensor(v, step, f"{step.input_name}[{i}].{k}")
        if extra.get("control") is not None and hasattr(extra["control"], "previous_controlnet"):
            extra["control"], note = control_net_with_policy(extra["control"], step.ctx)
            step.record.notes.append(f"{step.input_name}[{i}] control: {note}")
        out.append([_tensor(cond, step, f"{step.input_name}[{i}]"), extra])
    return out


def _model(model, step: Step):
    clone, note = model_with_policy(model, step.ctx)
    step.record.notes.append(f"{step.input_name}: {note}")
    cast = cast_patches_at_boundary(clone)
    if cast:
        step.record.notes.append(f"{step.input_name}: {cast}")
    guarded, _ = guard_model(clone, step.guard)
    return guarded


def _vae(vae, step: Step):
    copy, note = vae_with_policy(vae, step.ctx)
    step.record.notes.append(f"{step.input_name}: {note}")
    guarded, _ = guard_vae(copy, step.guard)
    return guarded


def _clip(clip, step: Step):
    clone, note = clip_with_policy(clip, step.ctx)
    step.record.notes.append(f"{step.input_name}: {note}")
    return clone


def _other_model(kind: str):
    def conform(obj, step: Step):
        new, note = WITH_POLICY[kind](obj, step.ctx)
        step.record.notes.append(f"{step.input_name}: {note}")
        return new
    return conform


_BY_KIND = {
    "IMAGE": lambda v, s: _tensor(v, s, s.input_name), "MASK": lambda v, s: _tensor(v, s, s.input_name),
    "LATENT": _latent, "CONDITIONING": _conditioning, "MODEL": _model, "VAE": _vae, "CLIP": _clip,
    **{kind: _other_model(kind) for kind in WITH_POLICY},
}
# what a value of each model kind looks like (duck-typed: another pack may hand over its own structure)
_LOOKS_LIKE = {
    "MODEL": lambda v: hasattr(v, "model_options") and hasattr(v, "clone"),
    "CLIP": lambda v: hasattr(v, "cond_stage_model") and hasattr(v, "patcher"),
    "VAE": lambda v: hasattr(v, "first_stage_model") and hasattr(v, "vae_dtype"),
    "UPSCALE_MODEL": lambda v: isinstance(getattr(v, "model", None), torch.nn.Module) and hasattr(v, "scale"),
    "CONTROL_NET": lambda v: hasattr(v, "copy") and hasattr(v, "previous_controlnet"),
    "CLIP_VISION": lambda v: isinstance(getattr(v, "model", None), torch.nn.Module) and hasattr(v, "encode_image"),
}


def conform_value(kind: str, value, step: Step):
    """`value` (one item of an input) conformed to `step.ctx` as a `kind`; unchanged when it is not one."""
    looks = _LOOKS_LIKE.get(kind)
    if value is None or (looks is not None and not looks(value)):
        return value
    return _BY_KIND[kind](value, step)
