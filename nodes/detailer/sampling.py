"""Re-sample a batch of same-size crops: VAE encode -> sampling (cycles) -> VAE decode.

Each step runs at its role's dtype under the context; encode and decode get the same per-item non-finite
repair as SafeVAEDecode. Seeds stay per region, so a batch gives what the regions would give one by one (for
samplers that draw no noise of their own during sampling, e.g. euler). A crop whose sampled latent comes out
non-finite is reported as failed and never decoded: the model or sampler made it, no VAE dtype can fix it.
"""
from __future__ import annotations

import dataclasses

import comfy.model_management as mm
import comfy.sample
import comfy.samplers
import node_helpers
import torch

from ..host.attach import model_with_policy
from ..host.copies import vae_at_dtype
from ..host.facts import resolution
from ..host.vae_decode import safe_decode
from ..precision.context import PrecisionContext
from ..precision.diagnose import explain_dtype_errors
from ..precision.finite import nonfinite_items
from ..precision.report import PrecisionRecord
from ..precision.retry import run_with_retry
from ..regions.options import SamplingOptions
from ..regions.regions import soft_mask
from ..regions.stages import StageClock

__all__ = ["SamplingOptions", "Encoded", "Resampled", "sampling_model", "encode", "encode_crops", "resample"]


def encode(vae, pixels: torch.Tensor, ctx: PrecisionContext, record: PrecisionRecord, tile: int = 0) -> torch.Tensor:
    """VAE encode at the context's vae dtype (tiled in `tile`-px tiles when > 0); non-finite latents are redone
    per item in a wider dtype."""
    def run_at(x, d):
        v = vae_at_dtype(vae, d)
        with explain_dtype_errors(f"{record.node} / vae encode", modules={"vae": v.first_stage_model},
                                  inputs={"image crops": x}):
            return v.encode_tiled(x, tile_x=tile, tile_y=tile, overlap=tile // 8) if tile else v.encode(x)

    return run_with_retry(run_at, pixels[..., :3], resolution(ctx, "vae", vae).dtype, ctx, record, vae.device)


def differential_denoise_mask(sigma, denoise_mask, extra_options):
    """Differential diffusion (ComfyUI's DifferentialDiffusion at strength 1): at each step only the part of a
    soft denoise mask above the step's progress is re-sampled, so the re-sampling fades out across the edge."""
    model = extra_options["model"]
    step_sigmas = extra_options["sigmas"]
    sampling = model.inner_model.model_sampling
    sigma_to = max(sampling.sigma_min, step_sigmas[-1])
    ts_from, ts_to = sampling.timestep(step_sigmas[0]), sampling.timestep(sigma_to)
    threshold = (sampling.timestep(sigma[0]) - ts_to) / (ts_from - ts_to)
    return (denoise_mask >= threshold).to(denoise_mask.dtype)


def sampling_model(model, ctx: PrecisionContext, opts: SamplingOptions, dtype: torch.dtype | None = None):
    """The MODEL the Detailer samples with: a clone at the context's unet dtype (or at `dtype`, for a retry), with
    differential diffusion when the denoise mask is soft. The shared MODEL is not touched."""
    want = resolution(ctx, "unet", model)
    if dtype is not None:
        want = dataclasses.replace(want, dtype=dtype, reason="re-sampling non-finite regions wider")
    clone, _ = model_with_policy(model, ctx, want)
    if opts.noise_mask and opts.noise_mask_feather > 0 and "denoise_mask_function" not in clone.model_options:
        clone.set_model_denoise_mask_function(differential_denoise_mask)
    return clone


def custom_sampling(model, opts: SamplingOptions):
    """(SAMPLER, SIGMAS) when a custom sampler or schedule is connected (the other one from the widgets, as
    KSampler would make it), else None: SamplerCustom's way, for every region."""
    if opts.sampler is None and opts.sigmas is None:
        return None
    sampler = opts.sampler if opts.sampler is not None else comfy.samplers.sampler_object(opts.sampler_name)
    sigmas = opts.sigmas
    if sigmas is None:
        sigmas = comfy.samplers.KSampler(model, steps=opts.steps, device=model.load_device, sampler=opts.sampler_name,
                                         scheduler=opts.scheduler, denoise=opts.denoise,
                                         model_options=model.model_options).sigmas
    return sampler, sigmas


def has_inpaint_channels(model) -> bool:
    return bool(getattr(model.model, "concat_keys", ()))


@dataclasses.dataclass(frozen=True)
class Encoded:
    """The latents a batch of crops is sampled from."""

    latent: torch.Tensor  # [B, C, h, w]
    concat: torch.Tensor | None = None  # inpaint models: the latents of the crops with their masks greyed out

    def item(self, i: int) -> "Encoded":
        return Encoded(self.latent[i:i + 1], None if self.concat is None else self.concat[i:i + 1])

    def to(self, device) -> "Encoded":
        return Encoded(self.latent.to(device), None if self.concat is None else self.concat.to(device))

    @staticmethod
    def cat(items: list["Encoded"]) -> "Encoded":
        concat = None if items[0].concat is None else torch.cat([e.concat for e in items])
        return Encoded(torch.cat([e.latent for e in items]), concat)


def encode_crops(vae, pixels: torch.Tensor, masks: torch.Tensor, opts: SamplingOptions, ctx: PrecisionContext,
                 record: PrecisionRecord) -> Encoded:
    """pixels [B, h, w, C] crops (masks [B, h, w] their hard region masks) encoded at the context's vae dtype.
    Inpaint models also get the crop with its masked part greyed out (InpaintModelConditioning's recipe, both
    encodes in one VAE call)."""
    tile = opts.tile_size if opts.tiled_encode else 0
    if not opts.inpaint_model:
        return Encoded(encode(vae, pixels, ctx, record, tile))
    keep = 1.0 - masks.round()[..., None]
    greyed = (pixels[..., :3] - 0.5) * keep + 0.5
    both = encode(vae, torch.cat([pixels[..., :3], greyed]), ctx, record, tile)
    return Encoded(both[:len(pixels)], both[len(pixels):])


@dataclasses.dataclass(frozen=True)
class Resampled:
    pixels: torch.Tensor  # [B, h, w, 3] fp32; a failed item holds its input crop
    nonfinite_samples: tuple[int, ...]  # items the sampler made non-finite (never decoded)
    nonfinite_decodes: tuple[int, ...]  # items still non-finite after the decode's repair

    @property
    def failed(self) -> tuple[int, ...]:
        """Items not to be pasted."""
        return tuple(sorted(self.nonfinite_samples + self.nonfinite_decodes))


def resample(model, positive, negative, vae, pixels: torch.Tensor, masks: torch.Tensor, seeds: list[int],
             opts: SamplingOptions, ctx: PrecisionContext, record: PrecisionRecord,
             clock: StageClock | None = None, encoded: Encoded | None = None) -> Resampled:
    """pixels [B, h, w, C] fp32 crops, masks [B, h, w] hard region masks -> re-sampled crops.

    The crops are encoded (`encode_crops`) unless `encoded` already holds their latents. Inpaint models get the
    masked crop's latent and the mask in their extra channels. The latent is sampled `opts.cycles` times
    (seed + cycle) and decoded once.
    """
    clock = clock or StageClock()
    b = pixels.shape[0]
    if encoded is None:
        with clock("encode"):
            encoded = encode_crops(vae, pixels, masks, opts, ctx, record)
    latent = encoded.latent
    if encoded.concat is not None:
        extra = {"concat_latent_image": encoded.concat, "concat_mask": masks[:, None]}
        positive = node_helpers.conditioning_set_values(positive, extra)
        negative = node_helpers.conditioning_set_values(negative, extra)
    noise_mask = soft_mask(masks, opts.noise_mask_feather)[:, None] if opts.noise_mask else None
    sampled_bad: set[int] = set()
    samples = latent
    custom = custom_sampling(model, opts)
    for c in range(opts.cycles):
        mm.throw_exception_if_processing_interrupted()
        # One noise tensor per region from its own seed: the batch equals the regions done one by one.
        noise = torch.cat([comfy.sample.prepare_noise(samples[i:i + 1], s + c) for i, s in enumerate(seeds)])
        with clock("sample"), explain_dtype_errors(f"{record.node} / sample", modules={"unet": model.model},
                                                   inputs={"latent": samples, "positive": positive[0][0]}):
            if custom is None:
                samples = comfy.sample.sample(
                    model, noise, opts.steps, opts.cfg, opts.sampler_name, opts.scheduler, positive, negative, samples,
                    denoise=opts.denoise, noise_mask=noise_mask, seed=seeds[0] + c, disable_pbar=True)
            else:
                samples = comfy.sample.sample_custom(model, noise, opts.cfg, *custom, positive, negative, samples,
                                                     noise_mask=noise_mask, seed=seeds[0] + c, disable_pbar=True)
        sampled_bad.update(nonfinite_items(samples))
    out = pixels[..., :3].float().clone()
    ok = [i for i in range(b) if i not in sampled_bad]
    decoded_bad: set[int] = set()
    if ok:
        with clock("decode"):
            decoded = safe_decode(vae, samples[ok], ctx, record, step="vae decode",
                                  tile=opts.tile_size if opts.tiled_decode else 0)
        decoded_bad = {ok[j] for j in nonfinite_items(decoded)}
        for j, i in enumerate(ok):
            if i not in decoded_bad:
                out[i] = decoded[j].to(out)
    return Resampled(out, tuple(sorted(sampled_bad)), tuple(sorted(decoded_bad)))
