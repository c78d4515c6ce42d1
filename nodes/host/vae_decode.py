"""Decode through ComfyUI's VAE at a chosen dtype, with a tiled fallback on out-of-memory that is reported."""
from __future__ import annotations

import contextlib
import logging

import torch

import comfy.model_management as mm

from ..precision.context import PrecisionContext
from ..precision.diagnose import explain_dtype_errors
from ..precision.report import PrecisionRecord
from ..precision.retry import run_with_retry
from .attach import vae_at_dtype
from .resolver import resolution


class _CoreTiledFallback(logging.Handler):
    """Notices core's own 'retrying with tiled VAE decoding' warning so the report can say so."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen = False

    def emit(self, record):
        message = record.getMessage()
        if "tiled" in message and "memory" in message:
            self.seen = True


@contextlib.contextmanager
def _watch_core_fallback():
    watcher = _CoreTiledFallback()
    root = logging.getLogger()
    root.addHandler(watcher)  # scoped to this call only
    try:
        yield watcher
    finally:
        root.removeHandler(watcher)


def decode_once(vae, latent: torch.Tensor, record: PrecisionRecord) -> torch.Tensor:
    """vae.decode, or vae.decode_tiled after an out-of-memory error; either way recorded."""
    with _watch_core_fallback() as watcher:
        try:
            images = vae.decode(latent)
        except mm.OOM_EXCEPTION:
            images = None
        if images is None:  # outside the except block, so the failed attempt's tensors can be freed
            mm.soft_empty_cache()
            images = vae.decode_tiled(latent)
            record.notes.append(f"out of memory: decoded {latent.shape[0]} item(s) tiled")
    if watcher.seen:
        record.notes.append("out of memory: ComfyUI fell back to tiled decode")
    return images


def safe_decode(vae, latent: torch.Tensor, ctx: PrecisionContext, record: PrecisionRecord,
                step: str = "") -> torch.Tensor:
    """Decode `latent` at the context's vae dtype; repair non-finite items per the context. Returns fp32 IMAGE.

    A torch dtype error inside the decoder is re-raised naming the submodule, the dtypes and the fix."""
    want = resolution(ctx, "vae", vae)
    record.ran_at("vae", want.name, want.device)
    where = f"{record.node} / {step}" if step else record.node

    def run_at(z, d):
        v = vae_at_dtype(vae, d)
        with explain_dtype_errors(where, modules={"vae": v.first_stage_model}, inputs={"samples": z}):
            return decode_once(v, z, record)

    return run_with_retry(run_at, latent, want.dtype, ctx, record, vae.device)
