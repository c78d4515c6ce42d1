"""fp16-safety verdicts for ComfyUI VAEs, and what `auto` decodes at given one.

The probe (nodes/precision/fp16_probe.py) decodes a fixed small latent with the VAE's fp16 copy (the cast copy
vae_at_dtype keeps anyway), reading activation peaks. Verdicts are cached by a hash of the source VAE's weights,
so one VAE loaded by several nodes, or loaded again, is probed once per process.

The resolver (nodes/host/facts.py) asks for a verdict only when it matters: `auto` for a VAE ComfyUI chose fp16
for (`--fp16-vae`, or a VAE whose working dtypes start with fp16). A VAE probed unsafe then decodes at bf16 where
the device has it, else fp32; ComfyUI's default bf16/fp32 VAEs are never probed.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..precision.fp16_probe import DEFAULT_MARGIN, Fp16Verdict, VerdictCache, fingerprint, probe_fp16, probe_latent
from ..precision.memo import PerSource
from .copies import vae_at_dtype, vae_source

CACHE = VerdictCache()
PROBE_SIZE = 16  # latent 16x16 -> a 128x128 image for an SD VAE: milliseconds on a GPU
# Verdict per source VAE model object, so the hot path (every decode) skips even the fingerprint's check of
# the weights (~4 ms for an SD VAE's ~250 tensors, measured on the H200 box). Same assumption as copies.py's
# cast-copy cache: a loaded VAE's weights are not changed in place. A reloaded VAE is a new object: fingerprinted,
# then found in CACHE without a probe.
_BY_MODEL = PerSource()  # VAE model -> margin -> verdict


def vae_fp16_verdict(vae, margin: float = DEFAULT_MARGIN) -> Optional[Fp16Verdict]:
    """The cached or probed verdict for `vae`'s weights; None for VAEs the probe can't drive (not 2-D latents)."""
    source = vae_source(vae)
    if getattr(source, "latent_dim", 2) != 2 or getattr(source, "first_stage_model", None) is None:
        return None
    model = source.first_stage_model
    hit = _BY_MODEL.get(model, margin)
    if hit is not None:
        return hit
    key = fingerprint(model)

    def probe():
        v16 = vae_at_dtype(source, torch.float16)  # the cached cast copy; the shared VAE is untouched
        latent = probe_latent(source.latent_channels, PROBE_SIZE)
        return probe_fp16(v16.first_stage_model, lambda: v16.decode(latent), margin)

    verdict = CACHE.verdict(key, probe, margin)
    _BY_MODEL.put(model, margin, verdict)
    return verdict


def clear_caches() -> None:
    """Forget every verdict (benchmarks measure cold runs with it)."""
    CACHE.clear()
    _BY_MODEL.clear()
