"""Checks of graph-edge tensors that raise on the node with a message saying what to fix upstream."""
from __future__ import annotations

import torch

from ..precision.errors import PrecisionError
from ..precision.finite import nonfinite_items


def check_latent(node: str, samples, latent_channels: int) -> torch.Tensor:
    if not isinstance(samples, torch.Tensor) or samples.ndim < 3:
        raise PrecisionError(node, f"the LATENT holds no [batch, channels, ...] tensor (got {type(samples).__name__}).",
                             "connect a LATENT output (e.g. KSampler's).", "samples")
    if samples.shape[0] == 0:
        raise PrecisionError(node, "the LATENT batch is empty (0 items).",
                             "check the upstream batch/slice nodes.", "samples")
    if samples.shape[1] != latent_channels:
        raise PrecisionError(node, f"the LATENT has {samples.shape[1]} channels but this VAE expects {latent_channels}.",
                             "use the VAE that belongs to the model that made the latent.", "samples")
    bad = nonfinite_items(samples)
    if bad:
        raise PrecisionError(
            node, f"the LATENT is already non-finite (NaN/Inf) in batch items {bad}: the sampler upstream "
                  "produced it, decoding cannot fix it.",
            "run the model at a wider dtype (Precision Policy unet_dtype bf16/fp32) or check the sampler settings.",
            "samples")
    return samples


def check_image(record, image: torch.Tensor, ctx) -> None:
    """An IMAGE that arrives non-finite was broken upstream: say so (error mode raises, else a warning)."""
    bad = nonfinite_items(image)
    if not bad:
        return
    problem = f"the IMAGE is already non-finite (NaN/Inf) in batch items {bad}: the node upstream produced it."
    if ctx.on_nonfinite == "error":
        raise PrecisionError(record.node, problem, "fix the upstream node (e.g. decode with Safe VAE Decode).", "image")
    record.warnings.append(problem + " Those pixels pass through as they are.")


BF16_IMAGES = ("core Save Image / Preview Image and every node that converts an IMAGE to numpy fail on bf16 (numpy has "
               "no bf16: 'Got unsupported ScalarType BFloat16'); save with Save Image (with precision record), or set "
               "Precision Policy's 'intermediate' to fp16 or fp32 (core saves both)")


def warn_bf16_image(record, images: torch.Tensor) -> None:
    """A node whose IMAGE output is bf16 says on itself what that breaks downstream."""
    if images.dtype == torch.bfloat16:
        record.warnings.append(f"IMAGE output is bf16: {BF16_IMAGES}")
