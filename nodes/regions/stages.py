"""Per-stage wall time of one Detailer run, for its record: where the time outside the UNet goes."""
from __future__ import annotations

import contextlib
import time

import torch

STAGES = ("detect", "sam", "crop", "encode", "sample", "decode", "paste")


class StageClock:
    """Adds each `with clock("stage"):` block's seconds to that stage. On CUDA the device is synchronised at each
    block's ends so asynchronous kernels are charged to the stage that launched them (a few syncs per batch)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.seconds = {s: 0.0 for s in STAGES}
        self._cuda = torch.device(device).type == "cuda"

    def _sync(self):
        if self._cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def __call__(self, stage: str):
        if stage not in self.seconds:
            raise KeyError(f"unknown stage {stage!r}; stages are {STAGES}")
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[stage] += time.perf_counter() - start

    def as_dict(self) -> dict:
        return {s: round(v, 6) for s, v in self.seconds.items()}
