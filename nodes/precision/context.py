"""The precision context: one immutable value that says at which dtype each role computes.

It travels on graph edges (the PRECISION_CONTEXT type) and inside MODEL/CLIP/VAE clones, so every node
downstream casts its inputs the same way. What a role's choice means for a given object is decided in one place:
resolve.py.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

ROLES = ("unet", "vae", "text_encoder", "detector", "sam", "intermediate")
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")
ON_MISMATCH = ("cast", "error")
ON_NONFINITE = ("retry", "error", "keep")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
NAMES = {v: k for k, v in DTYPES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    """Short name used in reports and messages (fp16, bf16, fp32, or torch's own name)."""
    return NAMES.get(dtype, str(dtype).replace("torch.", ""))


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return False


@dataclasses.dataclass(frozen=True)
class PrecisionContext:
    """Per-role compute dtypes plus what to do on a dtype mismatch and on non-finite output."""

    unet: str = "auto"
    vae: str = "auto"
    text_encoder: str = "auto"
    detector: str = "auto"
    sam: str = "auto"
    intermediate: str = "auto"
    on_mismatch: str = "cast"
    on_nonfinite: str = "retry"

    def __post_init__(self):
        for role in ROLES:
            if getattr(self, role) not in DTYPE_CHOICES:
                raise ValueError(f"{role} dtype must be one of {DTYPE_CHOICES}, got {getattr(self, role)!r}")
        if self.on_mismatch not in ON_MISMATCH:
            raise ValueError(f"on_mismatch must be one of {ON_MISMATCH}, got {self.on_mismatch!r}")
        if self.on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"on_nonfinite must be one of {ON_NONFINITE}, got {self.on_nonfinite!r}")

    def choice(self, role: str) -> str:
        if role not in ROLES:
            raise KeyError(f"unknown precision role {role!r}; roles are {ROLES}")
        return getattr(self, role)

    def replace(self, **changes) -> "PrecisionContext":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


DEFAULT = PrecisionContext()


def pick(explicit: Optional[PrecisionContext],
         *attached: tuple[str, Optional[PrecisionContext]]) -> tuple[PrecisionContext, str]:
    """The context a node uses: an explicit edge wins, then one attached to a value it got (`attached`: (what the
    value is, "MODEL" / "CLIP" / "VAE", its context or None)), then `auto`.

    Returns the context and where it came from, for the report.
    """
    if explicit is not None:
        return explicit, "context input"
    for kind, ctx in attached:
        if ctx is not None:
            return ctx, f"attached to {kind}"
    return DEFAULT, "default (auto)"


def wider_dtypes(dtype: torch.dtype, device: torch.device | str = "cpu") -> list[torch.dtype]:
    """The retry ladder after a non-finite result: fp16 -> bf16 -> fp32, bf16 -> fp32, fp32 -> nothing.

    bf16 keeps fp32's exponent range, so it cures overflow at half the memory; it is skipped on GPUs
    that lack it.
    """
    device = torch.device(device)
    ladder = [torch.float16, torch.bfloat16, torch.float32]
    if device.type == "cuda" and not bf16_supported(device):
        ladder.remove(torch.bfloat16)
    if dtype not in ladder:
        return [] if dtype == torch.float32 else [torch.float32]
    return ladder[ladder.index(dtype) + 1:]
