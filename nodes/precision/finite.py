"""Find non-finite values per batch item, cheaply."""
from __future__ import annotations

import torch


def nonfinite_items(x: torch.Tensor) -> list[int]:
    """Indices of batch items holding NaN or Inf.

    One float32 sum per item (~0.1 ms on a 1024² image) instead of an elementwise isfinite pass; a NaN or Inf
    anywhere makes the sum non-finite. A finite item whose float32 sum overflows is confirmed elementwise,
    so huge-but-finite values are not flagged. The sum reduces over the item's dimensions in place: ComfyUI's
    IMAGEs are channels-last views, which a reshape would first copy (a 12 MB copy at 1024²).
    """
    if x.numel() == 0 or not x.is_floating_point():
        return []
    sums = x.sum(dim=tuple(range(1, x.ndim)), dtype=torch.float32) if x.ndim > 1 else x.to(torch.float32)
    suspects = (~torch.isfinite(sums)).nonzero().flatten().tolist()
    return [i for i in suspects if not bool(torch.isfinite(x[i]).all())]


def nonfinite_counts(x: torch.Tensor) -> tuple[int, int]:
    """(NaN count, Inf count) of a whole tensor, for reports."""
    if not x.is_floating_point():
        return 0, 0
    return int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
