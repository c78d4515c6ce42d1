"""The one resolver: which dtype a role computes in, for a given object on a given device.

`auto` means the dtype ComfyUI itself chose for that object (a MODEL's compute dtype, a VAE's `vae_dtype`, a text
encoder's weight dtype, ComfyUI's IMAGE/LATENT dtype), widened only where the pack knows that choice is unsafe: a VAE
whose fp16 verdict says it overflows decodes at bf16 where the device has it, else fp32. Roles ComfyUI has no opinion
on (detector, SAM) get the pack's own default: fp32 on a CPU, bf16 on GPUs that have it, else fp16.

Pure: the facts about an object are read from ComfyUI by nodes/host/facts.py and handed in as `Facts`. Every
node, report, badge and Dtype Inspect check asks `resolve`, so `auto` never disagrees with ComfyUI's own choice.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

from .context import DTYPES, PrecisionContext, dtype_name


def _never_unsafe() -> Optional[str]:
    return None


@dataclasses.dataclass(frozen=True)
class Facts:
    """What is known about the object that runs a role."""

    device: torch.device
    native: Optional[torch.dtype] = None  # the dtype ComfyUI chose for it (None: ComfyUI has no choice here)
    stored: Optional[torch.dtype] = None  # its weights' dtype (None: no weights, or unknown)
    bf16: bool = False  # the device computes bf16
    subject: str = ""  # "this MODEL", "this VAE", ... for the reason text
    # Why fp16 is unsafe for it (a VAE's probe verdict), or None. Called only when the answer matters: probing costs.
    fp16_unsafe: Callable[[], Optional[str]] = _never_unsafe
    # For `intermediate`: the value goes to a node outside the pack (core or third-party), which takes what it was
    # written for, whatever the context says: the dtype of the weights it holds itself (`stored`), else ComfyUI's.
    foreign: bool = False
    # Its weights' storage formats when some are quantized ("GGUF Q8_0 + GGUF F32"), else "": their dtype is how they
    # are stored, `native` what its ops dequantize them to
    storage: str = ""


@dataclasses.dataclass(frozen=True)
class Resolution:
    """The dtype a role runs at, and why."""

    role: str
    choice: str  # the context's setting: auto / fp32 / fp16 / bf16
    dtype: torch.dtype
    native: Optional[torch.dtype]  # ComfyUI's own choice for the object, when it has one
    reason: str
    device: str = "cpu"

    @property
    def name(self) -> str:
        return dtype_name(self.dtype)

    @property
    def differs_from_comfy(self) -> bool:
        return self.native is not None and self.dtype != self.native

    def text(self) -> str:
        return f"{self.role}: {self.name} · {self.device} ({self.reason})"


def pack_default(role: str, facts: Facts) -> torch.dtype:
    """The dtype for roles ComfyUI makes no choice for: fp32 off accelerators and for intermediates."""
    if role == "intermediate" or facts.device.type not in ("cuda", "mps", "xpu"):
        return torch.float32
    return torch.bfloat16 if facts.bf16 else torch.float16


def _for_foreign_node(choice: str, facts: Facts) -> Resolution:
    """What a core or third-party node gets: never a dtype that breaks it (numpy/scipy/PIL have no bf16, fp32
    convolutions refuse half inputs, half weights refuse fp32 inputs)."""
    where, device = facts.subject or "this node", facts.device.type
    if facts.stored is not None and facts.stored.is_floating_point and facts.stored.itemsize >= 2:
        dtype, reason = facts.stored, f"{where} holds {dtype_name(facts.stored)} weights itself"
    else:
        dtype = facts.native if facts.native is not None else torch.float32
        reason = f"what {where} is written for: ComfyUI's IMAGE/LATENT dtype"
    if choice != "auto" and DTYPES[choice] != dtype:
        reason += f"; the context's {choice} applies to the pack's nodes"
    return Resolution("intermediate", choice, dtype, facts.native, reason, device)


def resolve(ctx: PrecisionContext, role: str, facts: Facts) -> Resolution:
    """The dtype `role` computes in for the object `facts` describe."""
    choice = ctx.choice(role)
    native = facts.native
    where = facts.subject or "it"
    device = facts.device.type
    if role == "intermediate" and facts.foreign:
        return _for_foreign_node(choice, facts)
    if choice != "auto":
        dtype = DTYPES[choice]
        reason = f"set to {choice}"
        if native is not None and native != dtype:
            reason += f"; ComfyUI chose {dtype_name(native)} for {where}"
        return Resolution(role, choice, dtype, native, reason + _stored(facts), device)
    if native is None:
        dtype = pack_default(role, facts)
        return Resolution(role, choice, dtype, None, f"auto: the pack's default on {device}", device)
    if native == torch.float16 and role == "vae":
        why = facts.fp16_unsafe()
        if why:
            wider = torch.bfloat16 if facts.bf16 else torch.float32
            return Resolution(role, choice, wider, native,
                              f"auto: ComfyUI chose fp16 for {where}, widened to {dtype_name(wider)}: {why}", device)
    return Resolution(role, choice, native, native, f"auto: ComfyUI's choice for {where}{_stored(facts)}", device)


def _stored(facts: Facts) -> str:
    return f"; weights stored as {facts.storage}, dequantized per layer by its ops" if facts.storage else ""
