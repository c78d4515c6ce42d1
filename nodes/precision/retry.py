"""Run a model step (VAE decode/encode), find the batch items that came out non-finite, redo only those wider."""
from __future__ import annotations

from typing import Callable

import torch

from .context import PrecisionContext, dtype_name, wider_dtypes
from .errors import PrecisionError
from .finite import nonfinite_items
from .report import PrecisionRecord

RunAt = Callable[[torch.Tensor, torch.dtype], torch.Tensor]


def run_with_retry(
    run_at: RunAt,
    latent: torch.Tensor,
    dtype: torch.dtype,
    ctx: PrecisionContext,
    record: PrecisionRecord,
    device: torch.device | str,
    role: str = "vae",
) -> torch.Tensor:
    """`run_at(latent, dtype)` for the whole batch, then per-item repair of non-finite output.

    `run_at` must be batch-item independent (a VAE decode or encode is), so re-running a subset is exact.

    on_nonfinite: `retry` re-decodes only the failed items at each wider dtype (fp16 -> bf16 -> fp32) until they
    are finite; `error` raises on the node; `keep` passes the output on with a loud warning. Nothing global or
    shared changes: `run_at` is expected to use its own copy of the model for another dtype.
    """
    out = run_at(latent, dtype)
    bad = nonfinite_items(out)
    if not bad:
        return out
    first = dtype_name(dtype)
    if ctx.on_nonfinite == "error":
        raise PrecisionError(
            record.node, f"{role} output at {first} is non-finite (NaN/Inf) for batch items {bad}.",
            f"set Precision Policy's '{role}' to bf16 or fp32, or on_nonfinite to 'retry'.")
    if ctx.on_nonfinite == "retry":
        out = out.clone()  # the first result may be a cached tensor: never write into it
        for wider in wider_dtypes(dtype, device):
            idx = torch.tensor(bad, device=latent.device)
            redo = run_at(latent.index_select(0, idx), wider)
            # run_at may answer on another device at another dtype (a decode kept on the GPU or not)
            out[idx.to(out.device)] = redo.to(device=out.device, dtype=out.dtype)
            still = [bad[i] for i in nonfinite_items(redo)]
            record.retries.append(f"items {bad} {first} -> {dtype_name(wider)}: "
                                  + ("finite" if not still else f"still non-finite {still}"))
            bad, first = still, dtype_name(wider)
            if not bad:
                return out
    record.warnings.append(f"{role} output non-finite for batch items {bad} at {first}; passed on as is "
                           "(it will save as a black image)")
    return out
