"""Bring a tensor to the dtype/device the context expects, or refuse it with a clear message."""
from __future__ import annotations

import torch

from .context import PrecisionContext, dtype_name
from .errors import PrecisionError, mismatch_message
from .report import PrecisionRecord


def conform(
    x: torch.Tensor,
    role: str,
    ctx: PrecisionContext,
    device: torch.device | str,
    *,
    record: PrecisionRecord,
    input_name: str,
) -> torch.Tensor:
    """Return `x` at the role's dtype on `device`; never modifies `x`.

    A dtype that disagrees with the context is cast and recorded (`cast`) or raised on the node (`error`).
    Moving between devices is routine (ComfyUI keeps intermediates on the CPU), so it is only recorded.
    Non-float inputs (masks as bool/uint8) are a user error and always raise.
    """
    if not isinstance(x, torch.Tensor):
        raise PrecisionError(record.node, f"expected a tensor, got {type(x).__name__}.",
                             "connect an output of the matching type.", input_name)
    if not x.is_floating_point():
        raise PrecisionError(record.node, f"got a {dtype_name(x.dtype)} tensor; a float tensor is needed.",
                             "convert it to a float IMAGE/MASK/LATENT upstream.", input_name)
    device = torch.device(device)
    expected = ctx.dtype_for(role, device)
    if x.dtype != expected:
        found, wanted = dtype_name(x.dtype), dtype_name(expected)
        if ctx.on_mismatch == "error":
            raise mismatch_message(record.node, input_name, found, wanted, role)
        record.casts.append(f"{input_name}: {found} -> {wanted}")
    if x.device != device and x.device.type != device.type:
        record.notes.append(f"{input_name} moved {x.device.type} -> {device.type}")
    return x.to(device=device, dtype=expected)
