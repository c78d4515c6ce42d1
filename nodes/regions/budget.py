"""Will a Detailer batch fit in memory? Decided before it starts from ComfyUI's own estimates (the model's
`memory_required`, the VAE's `memory_used_encode`) and the memory that is free: sample the batch whole, sample fewer
of its regions at a time, or refuse with the figures and the size that would fit. On a CPU a sampler that does not
fit raises nothing: it swaps until the kernel kills the process (and the server with its queue).

Pure arithmetic: the estimates come in as functions.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from ..precision.budget import gib

MIN_SIDE = 64  # the smallest sampling size offered as a fix


@dataclasses.dataclass(frozen=True)
class Need:
    """Bytes one batch takes: `held` all along (the crops, the canvas, the decoded pixels), plus the larger of the
    VAE encode's and the sampler's work (they run one after the other)."""

    held: float
    encode: float
    sample: float

    @property
    def total(self) -> float:
        return self.held + max(self.encode, self.sample)

    def text(self) -> str:
        return (f"~{gib(self.total)} (sampler ~{gib(self.sample)}, VAE encode ~{gib(self.encode)}, "
                f"pixels ~{gib(self.held)})")


NeedFor = Callable[[int, tuple[int, int]], Need]  # (regions in the batch, (height, width) sampled at) -> Need


def fitting_batch(n: int, hw: tuple[int, int], need: NeedFor, free: float) -> int:
    """The most of `n` same-size regions sampled together that fit in `free` bytes (all `n` when they do), 0 when not
    even one does."""
    for k in range(n, 0, -1):
        if need(k, hw).total <= free:
            return k
    return 0


def largest_fitting_size(hw: tuple[int, int], need: NeedFor, free: float) -> Optional[tuple[int, int]]:
    """The largest (height, width) of `hw`'s shape, multiples of 8 and at least MIN_SIDE on the shorter side, at
    which one region fits in `free` bytes; None when none does."""
    h, w = hw
    scale = 1.0
    while True:
        scale *= 0.9
        size = (max(8, int(h * scale) // 8 * 8), max(8, int(w * scale) // 8 * 8))
        if min(size) < MIN_SIDE:
            return None
        if need(1, size).total <= free:
            return size
