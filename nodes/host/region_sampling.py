"""Re-sample a batch of same-size crops: VAE encode -> KSampler-equivalent sampling -> safe VAE decode.

Each step runs at its role's dtype under the context; encode and decode get the same per-item non-finite
repair as SafeVAEDecode (one shared implementation). Seeds stay per region, so a batch gives what the regions
would give one by one (for samplers that draw no noise of their own during sampling, e.g. euler).
"""
from __future__ import annotations

import dataclasses

import torch

import comfy.sample

from ..precision.context import PrecisionContext
from ..precision.diagnose import explain_dtype_errors
from ..precision.report import PrecisionRecord
from ..precision.retry import run_with_retry
from .attach import vae_at_dtype
from .resolver import resolution
from .vae_decode import safe_decode


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    denoise: float
    noise_mask: bool


def encode(vae, pixels: torch.Tensor, ctx: PrecisionContext, record: PrecisionRecord) -> torch.Tensor:
    """VAE encode at the context's vae dtype; non-finite latents are redone per item in a wider dtype."""
    want = resolution(ctx, "vae", vae)

    def run_at(x, d):
        v = vae_at_dtype(vae, d)
        with explain_dtype_errors(f"{record.node} / vae encode", modules={"vae": v.first_stage_model},
                                  inputs={"image crops": x}):
            return v.encode(x)

    return run_with_retry(run_at, pixels[..., :3], want.dtype, ctx, record, vae.device)


def resample(model, positive, negative, vae, pixels: torch.Tensor, masks: torch.Tensor, seeds: list[int],
             opts: SamplingOptions, ctx: PrecisionContext, record: PrecisionRecord) -> torch.Tensor:
    """pixels [B, h, w, C] fp32, masks [B, h, w] -> re-sampled pixels [B, h, w, 3] fp32."""
    latent = encode(vae, pixels, ctx, record)
    latent = comfy.sample.fix_empty_latent_channels(model, latent)
    # One noise tensor per region from its own seed: the batch equals the regions done one by one.
    noise = torch.cat([comfy.sample.prepare_noise(latent[i:i + 1], s) for i, s in enumerate(seeds)])
    unet = resolution(ctx, "unet", model)
    record.ran_at("unet", unet.name, unet.device)
    with explain_dtype_errors(f"{record.node} / sample", modules={"unet": model.model},
                              inputs={"latent": latent, "positive": positive[0][0]}):
        samples = comfy.sample.sample(
            model, noise, opts.steps, opts.cfg, opts.sampler_name, opts.scheduler, positive, negative, latent,
            denoise=opts.denoise, noise_mask=masks[:, None] if opts.noise_mask else None, seed=seeds[0],
            disable_pbar=True)
    return safe_decode(vae, samples, ctx, record, step="vae decode")
