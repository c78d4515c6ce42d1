"""Decode through ComfyUI's VAE at a chosen dtype. Before it starts, the decode is checked against the free memory:
one that cannot fit whole is decoded tile by tile (stopping between tiles on an interrupt), or refused with the
figures when even that cannot fit. An out-of-memory error still falls back to tiled decoding, reported."""
from __future__ import annotations

import contextlib
import copy
import logging
from typing import Optional

import comfy.model_management as mm
import comfy.utils
import torch

from ..precision.budget import DecodeNeed, plan_decode, surely_fits
from ..precision.context import PrecisionContext
from ..precision.diagnose import explain_dtype_errors
from ..precision.report import PrecisionRecord
from ..precision.retry import run_with_retry
from .copies import vae_at_dtype
from .facts import resolution


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


def _total_bytes(device: torch.device) -> float:
    """The device's memory as ComfyUI measured it at start-up (RAM for the CPU)."""
    megabytes = mm.total_ram if device.type == "cpu" else mm.total_vram
    return megabytes * 2 ** 20


def _free_bytes(device: torch.device) -> float:
    """Memory a decode on `device` can have: what is free, plus on an accelerator the models ComfyUI unloads to make
    room (as it does before a decode)."""
    free = mm.get_free_memory(device)
    if device.type != "cpu":
        free += sum(m.model_loaded_memory() for m in mm.current_loaded_models
                    if m.device == device and m.model is not None)  # its patcher may be gone
    return free


def decode_need(vae, latent: torch.Tensor) -> Optional[DecodeNeed]:
    """What decoding `latent` takes, from the VAE's own estimate at its dtype; None for latents that are not images
    (video, audio), which core decodes as before."""
    scale = vae.upscale_ratio
    if latent.ndim != 4 or not isinstance(scale, int) or getattr(vae, "extra_1d_channel", None) is not None:
        return None
    batch, channels, height, width = latent.shape
    pixels = height * scale * width * scale
    return DecodeNeed(batch, height, width, scale,
                      work=lambda h, w: float(vae.memory_used_decode((1, channels, h, w), vae.vae_dtype)),
                      image_bytes=batch * getattr(vae, "output_channels", 3) * pixels * 4,  # fp32, as core makes it
                      blend_bytes=pixels * 4)


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile offsets covering `size`, the last one flush with the end."""
    if size <= tile:
        return [0]
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


def _ramp(height: int, width: int, feather: int) -> torch.Tensor:
    """[1, H, W, 1] blend weights rising linearly over `feather` pixels at each edge (never zero)."""
    def axis(n):
        ramp = torch.ones(n)
        steps = torch.arange(1, min(feather, n) + 1, dtype=torch.float32) / (feather + 1)
        ramp[:len(steps)] = torch.minimum(ramp[:len(steps)], steps)
        ramp[n - len(steps):] = torch.minimum(ramp[n - len(steps):], steps.flip(0))
        return ramp
    return (axis(height)[:, None] * axis(width)[None, :])[None, :, :, None]


def decode_tiles(vae, latent: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """Decode `latent` one tile of one item at a time through vae.decode, blending overlaps linearly; checks for an
    interrupt before every tile and reports progress. Holds the IMAGE and one weight plane, plus one tile's decode."""
    batch, _, height, width = latent.shape
    scale = vae.upscale_ratio
    device = vae.output_device
    out = torch.zeros((batch, height * scale, width * scale, getattr(vae, "output_channels", 3)), device=device)
    weight = torch.zeros((1, height * scale, width * scale, 1), device=device)
    positions = [(y, x) for y in _starts(height, tile, overlap) for x in _starts(width, tile, overlap)]
    progress = comfy.utils.ProgressBar(len(positions) * batch)
    for y, x in positions:
        h, w = min(tile, height - y), min(tile, width - x)
        ramp = _ramp(h * scale, w * scale, overlap * scale).to(device)
        rows, cols = slice(y * scale, (y + h) * scale), slice(x * scale, (x + w) * scale)
        for i in range(batch):
            mm.throw_exception_if_processing_interrupted()
            piece = vae.decode(latent[i:i + 1, :, y:y + h, x:x + w]).to(device)
            out[i:i + 1, rows, cols] += piece * ramp
            progress.update(1)
        weight[:, rows, cols] += ramp
    return out.div_(weight)


def _image_on_device(vae):
    """A copy of `vae` (same weights) whose decoded IMAGE stays on the decoding device. Core copies the decoder's
    output to the CPU first and converts and clamps it there, 7-23 ms of a 1024² decode on an H200; on the GPU that
    work, and the non-finite check after it, take well under a millisecond, and one finished IMAGE is copied."""
    kept = copy.copy(vae)
    kept.output_device = vae.device
    return kept


def decode_once(vae, latent: torch.Tensor, record: PrecisionRecord) -> torch.Tensor:
    """vae.decode when it fits in memory; tile by tile when it does not (or after an out-of-memory error); a
    PrecisionError with the figures when not even that fits. Tiling is recorded.

    When the decode and its IMAGE surely fit in the decoding device's memory, the IMAGE is made and returned there;
    else on vae.output_device. Callers move it to vae.output_device."""
    need = decode_need(vae, latent)
    device, host = torch.device(vae.device), torch.device(vae.output_device)
    shared = host == device
    decoder = vae
    if need is not None and not shared and surely_fits(need, _total_bytes(device), _total_bytes(device), True):
        decoder = _image_on_device(vae)
    elif need is not None and not surely_fits(need, _total_bytes(device), _total_bytes(host), shared):
        free = _free_bytes(device)
        plan = plan_decode(record.node, need, free, free if shared else _free_bytes(host), shared)
        if plan.tiled:
            record.notes.append(plan.note(need))
            return decode_tiles(vae, latent, plan.tile, plan.overlap)
    with _watch_core_fallback() as watcher:
        try:
            images = decoder.decode(latent)
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
                step: str = "", tile: int = 0) -> torch.Tensor:
    """Decode `latent` at the context's vae dtype; repair non-finite items per the context (where the IMAGE was
    made: on the GPU when it fits there). Returns an fp32 IMAGE on vae.output_device, as core's decode does.
    With `tile` > 0, decoded in `tile`-px tiles (core's decode_tiled), with the same per-item repair.

    A torch dtype error inside the decoder is re-raised naming the submodule, the dtypes and the fix."""
    want = resolution(ctx, "vae", vae)
    record.ran_at("vae", want.name, want.device)
    where = f"{record.node} / {step}" if step else record.node

    def run_at(z, d):
        v = vae_at_dtype(vae, d)
        with explain_dtype_errors(where, modules={"vae": v.first_stage_model}, inputs={"samples": z}):
            if tile:
                return v.decode_tiled(z, tile_x=tile // 8, tile_y=tile // 8, overlap=tile // 32)
            return decode_once(v, z, record)

    return run_with_retry(run_at, latent, want.dtype, ctx, record, vae.device).to(vae.output_device)
