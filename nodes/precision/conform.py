"""Bring a tensor to the dtype/device the context expects, or refuse it with a clear message."""
from __future__ import annotations

import torch

from .context import dtype_name
from .errors import PrecisionError, mismatch_message
from .report import PrecisionRecord
from .resolve import Resolution


def conform(
    x: torch.Tensor,
    want: Resolution,
    on_mismatch: str,
    device: torch.device | str,
    *,
    record: PrecisionRecord,
    input_name: str,
) -> torch.Tensor:
    """Return `x` at the resolved dtype on `device`; never modifies `x`.

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
    if x.dtype != want.dtype:
        found = dtype_name(x.dtype)
        if on_mismatch == "error":
            raise mismatch_message(record.node, input_name, found, want.name, want.role)
        record.casts.append(f"{input_name}: {found} -> {want.name}")
    if x.device != device and x.device.type != device.type:
        record.notes.append(f"{input_name} moved {x.device.type} -> {device.type}")
    return x.to(device=device, dtype=want.dtype)
