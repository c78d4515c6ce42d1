"""The Detailer's pipeline after its regions are found: group them into same-size batches that fit in memory,
re-sample each batch (a region whose sample comes out non-finite is re-sampled with the UNet at the next wider dtype
under on_nonfinite=retry), paste the results back through their feathered masks.

The image stays where it came (the CPU): each crop goes to the sampling device, where it is resized, encoded,
sampled and decoded, and its paste (feathered mask, blend) runs there on the crop's area, which then comes back into
the node's own copy of the image. Only crops cross, never the whole image."""
from __future__ import annotations

import dataclasses

import comfy.model_management as mm
import comfy.utils
import torch

from ..host.facts import model_compute_dtype, resolution
from ..host.vae_decode import _image_on_device
from ..precision.budget import gib
from ..precision.context import dtype_name, wider_dtypes
from ..precision.errors import PrecisionError
from ..regions import regions as R
from ..regions.budget import fitting_batch, largest_fitting_size
from ..regions.options import CropOptions, SamplingOptions
from ..regions.stages import StageClock
from . import conditioning as RC
from .memory import free_memory, need_for
from .reuse import encoded_crops
from .sampling import encode_crops, resample, sampling_model


@dataclasses.dataclass
class Result:
    image: torch.Tensor  # the detailed batch
    mask: torch.Tensor  # union of the feathered paste masks
    before: list = dataclasses.field(default_factory=list)  # [1, h, w, 3] crops of the regions sampled, before
    after: list = dataclasses.field(default_factory=list)  # ... and after (unchanged where nothing was pasted)
    crops: dict = dataclasses.field(default_factory=dict)  # region index -> crop for the SEGS output
    detailed: set = dataclasses.field(default_factory=set)  # indices of regions pasted back
    skipped: set = dataclasses.field(default_factory=set)  # indices of regions a [skip] prompt left out


@dataclasses.dataclass
class Detail:
    """One Detailer run's state while it samples its batches."""

    work: torch.Tensor  # the images, fp32 on the CPU (read only)
    source_model: object  # the MODEL given: retries clone it at a wider dtype
    model: object  # what samples: source_model at the context's unet dtype
    positive: list
    negative: list
    vae: object
    clip: object
    sampling: SamplingOptions
    crop: CropOptions
    seed: int
    max_batch: int
    ctx: object
    record: object
    clock: StageClock
    texts: dict = dataclasses.field(default_factory=dict)  # prompt text -> CONDITIONING, encoded once per run
    wider: dict = dataclasses.field(default_factory=dict)  # dtype -> the sampling MODEL at that dtype (retries)
    kept_out: dict = dataclasses.field(default_factory=dict)  # region index -> (region, stage, dtype): kept out
    reused: set = dataclasses.field(default_factory=set)  # indices of regions whose latent was encoded before

    def conditioning(self, base, text: str):
        if not text:
            return base
        if text not in self.texts:
            self.texts[text] = self.clip.encode_from_tokens_scheduled(self.clip.tokenize(text))
        return RC.with_text(base, self.texts[text])

    def run(self, regions, prompts, negatives) -> Result:
        device = self.device = torch.device(self.model.load_device)
        # a VAE at its own dtype answers on its device (a cast copy is cached per source VAE: left as it is)
        vae = resolution(self.ctx, "vae", self.vae)
        self.vae_here = _image_on_device(self.vae) if vae.dtype == self.vae.vae_dtype else self.vae
        # what a crop's latent depends on besides its pixels and its place (reuse.py)
        self._encode_key = (vae.dtype, str(self.vae.device), getattr(self.vae.patcher, "patches_uuid", None),
                            self.sampling.tiled_encode and self.sampling.tile_size, self.sampling.inpaint_model)
        out = Result(self.work.clone(), torch.zeros(self.work.shape[:3]))
        todo = []
        for r in regions:
            if prompts.skips(r.index, r.label):
                out.skipped.add(r.index)
                self.record.notes.append(f"region #{r.index} ({r.label}): [skip]")
            elif r.target is None:
                self.record.notes.append(f"region #{r.index} ({r.label}): left alone, its box is already at least "
                                         f"guide_size {self.crop.guide_size} (force_inpaint is off)")
            else:
                todo.append(r)
        if not self.sampling.runs:
            if todo:
                self.record.notes.append("denoise 0: nothing re-sampled, the image is unchanged")
            out.crops.update({r.index: self._crop(r) for r in todo})
            return self._on_host(out)
        texts = lambda r: (prompts.text_for(r.index, r.label), negatives.text_for(r.index, r.label))  # noqa: E731
        if self.clip is None and any(t for r in todo for t in texts(r)):
            raise PrecisionError(self.record.node, "a region prompt is set but no CLIP is connected.",
                                 "connect the clip input, or clear region_prompts / region_negative_prompts.", "clip")
        single = RC.needs_single_crop(self.positive) or RC.needs_single_crop(self.negative)
        groups = R.group_by_size(todo, key=lambda r: (r.target, texts(r), id(r.control) if r.control else None,
                                                      r.index if single else None), max_batch=self.max_batch)
        groups = self._fit(groups)
        if groups:
            self.record.ran_at("unet", dtype_name(model_compute_dtype(self.model)), device.type)
        pbar = comfy.utils.ProgressBar(max(1, len(groups)))
        for n, group in enumerate(groups):
            mm.throw_exception_if_processing_interrupted()  # stop between batches
            done = self._batch(group, *texts(group[0]))
            self.record.notes.append(f"batch {n + 1}/{len(groups)}: {len(group)} region(s) at "
                                     f"{group[0].target[1]}x{group[0].target[0]}")
            with self.clock("paste"):
                for r, patch in done:
                    original = self._crop(r)
                    if patch is not None:
                        self._paste(out, r, patch)
                        out.detailed.add(r.index)
                    out.before.append(original)
                    out.after.append(original if patch is None else patch)
                    out.crops[r.index] = original if patch is None else patch
            pbar.update(1)
        self._warn_kept_out()
        return self._on_host(out)

    def _paste(self, out: Result, r, patch: torch.Tensor) -> None:
        """`patch` (r's crop, sampled, on the sampling device) pasted into the node's own copy of the image through
        r's feathered mask. Only the box around the mask's non-zero pixels crosses to the device and back: nothing
        outside it can change."""
        soft = R.feather(r.mask.to(self.device), self.crop.feather)
        at = R.extent(soft)
        if at is None:
            return
        ax0, ay0, ax1, ay1 = at
        x0, y0 = r.crop[0] + ax0, r.crop[1] + ay0
        rows, cols = slice(y0, y0 + ay1 - ay0), slice(x0, x0 + ax1 - ax0)
        soft = soft[ay0:ay1, ax0:ax1]
        area = out.image[r.image_index, rows, cols]  # as pasted so far
        here = area.to(self.device)
        R.paste_into(here, patch[ay0:ay1, ax0:ax1], (0, 0, ax1 - ax0, ay1 - ay0), soft)
        area.copy_(here)
        seam = out.mask[r.image_index, rows, cols]
        torch.maximum(seam, soft.to(seam.device), out=seam)

    def _on_host(self, out: Result) -> Result:
        """The outputs where the input images were (a sampled patch copied once)."""
        host, moved = self.work.device, {}

        def back(t):  # a crop in several outputs is copied once
            if id(t) not in moved:
                moved[id(t)] = t.to(host)
            return moved[id(t)]

        return dataclasses.replace(out, image=out.image.to(host), mask=out.mask.to(host),
                                   before=[back(t)[None] for t in out.before],
                                   after=[back(t)[None] for t in out.after],
                                   crops={k: back(v) for k, v in out.crops.items()})

    def _fit(self, groups):
        """`groups` split so each batch's sampler + VAE encode fits in the free memory (ComfyUI's estimates), before
        anything is allocated; a PrecisionError with the figures and the fix when not even one region fits."""
        need = need_for(self.model, self.vae, self.sampling, self.work.numel() * 4 * 2)
        free = free_memory(self.model)
        out = []
        for group in groups:
            target = group[0].target
            k = fitting_batch(len(group), target, need, free)
            if k == 0:
                self._refuse(group[0], need, free)
            if k < len(group):
                self.record.notes.append(
                    f"memory: {len(group)} regions at {target[1]}x{target[0]} need {need(len(group), target).text()} "
                    f"together, {gib(free)} is free: sampled {k} at a time")
            out += [group[i:i + k] for i in range(0, len(group), k)]
        return out

    def _refuse(self, r, need, free):
        (h, w), one = r.target, need(1, r.target)
        fits = largest_fitting_size(r.target, need, free)
        scale = f"max_size {max(fits) // 8 * 8} or less" if fits else "a much smaller max_size"
        raise PrecisionError(
            self.record.node,
            f"region #{r.index} ({r.label}) would be sampled at {w}x{h} (guide_size {self.crop.guide_size}, "
            f"max_size {self.crop.max_size}, crop {r.crop_size[1]}x{r.crop_size[0]}), which needs {one.text()} by "
            f"ComfyUI's estimates, but only {gib(free)} is free: nothing was sampled.",
            f"lower guide_size / max_size ({scale} fits now) or the crop_factor of the detection options"
            + ("; tiled_vae 'encode' shrinks the encode" if one.encode > one.sample and not self.sampling.tiled_encode
               else "") + "; or free memory (close other programs, unload models).", "max_size")

    def _crop(self, r) -> torch.Tensor:
        """Region `r`'s crop of the input image, where the image is."""
        x0, y0, x1, y1 = r.crop
        return self.work[r.image_index, y0:y1, x0:x1]

    def _batch(self, group, text, negative_text):
        """Sample one group; [(region, patch at crop size or None when it must keep its pixels)]. Regions whose sample
        is non-finite are re-sampled at each wider unet dtype under on_nonfinite=retry."""
        res = self._sample(group, text, negative_text, self.model)
        if res is None:
            return [(r, None) for r in group]
        patches = {r.index: (None if i in res.failed else res.pixels[i:i + 1]) for i, r in enumerate(group)}
        dtype = model_compute_dtype(self.model)
        self._note_failures(group, res, dtype)
        failed = [group[i] for i in res.nonfinite_samples]
        if failed and self.ctx.on_nonfinite == "retry":
            for wider in wider_dtypes(dtype, self.model.load_device):
                redo = self._sample(failed, text, negative_text, self._model_at(wider))
                still = [failed[i] for i in redo.nonfinite_samples]
                self.record.retries.append(f"unet: region(s) {_names(failed)} re-sampled {dtype_name(dtype)} -> "
                                           f"{dtype_name(wider)}: "
                                           + (f"still non-finite {_names(still)}" if still else "finite"))
                patches.update({r.index: redo.pixels[i:i + 1] for i, r in enumerate(failed) if i not in redo.failed})
                self._note_failures(failed, redo, wider)
                failed, dtype = still, wider
                if not failed:
                    break
        if failed and self.ctx.on_nonfinite == "error":
            raise PrecisionError(self.record.node, _sample_problem(failed, dtype_name(dtype)) + ".", "check the "
                                 "MODEL chain (LoRAs, merges), run the UNet at a wider dtype (Precision Policy "
                                 "unet_dtype bf16 or fp32), or set on_nonfinite to 'keep' to leave such regions "
                                 "unchanged.", "model")
        return [(r, None if patches[r.index] is None else R.resize(patches[r.index], r.crop_size)[0]) for r in group]

    def _note_failures(self, group, res, dtype):
        """Remember which regions of `group` keep their pixels after `res` (and forget those it repaired)."""
        for i, r in enumerate(group):
            if i in res.nonfinite_samples:
                self.kept_out[r.index] = (r, "sample", dtype_name(dtype))
            elif i in res.nonfinite_decodes:
                self.kept_out[r.index] = (r, "decode", dtype_name(dtype))
            else:
                self.kept_out.pop(r.index, None)

    def _warn_kept_out(self):
        """One warning for the run per cause, naming every region that keeps its pixels."""
        for stage in ("sample", "decode"):
            kept = [(r, d) for r, s, d in self.kept_out.values() if s == stage]
            if not kept:
                continue
            regions, dtypes = [r for r, _ in kept], "/".join(sorted({d for _, d in kept}))
            if stage == "decode":
                self.record.warnings.append(f"region(s) {_names(regions)} decoded non-finite (NaN/Inf): they keep "
                                            "their original pixels.")
                continue
            if self.ctx.on_nonfinite == "retry":
                hint = " (no unet dtype wider than fp32 to retry at)" if dtypes == "fp32" else ""
            else:
                hint = " (on_nonfinite 'retry' re-samples them with the UNet at a wider dtype)"
            self.record.warnings.append(_sample_problem(regions, dtypes) + ". Those regions keep their original "
                                        f"pixels{hint}.")

    def _model_at(self, dtype):
        if dtype not in self.wider:
            self.wider[dtype] = sampling_model(self.source_model, self.ctx, self.sampling, dtype)
        return self.wider[dtype]

    def _sample(self, group, text, negative_text, model):
        """Crops of `group` resized to their target, conditioned and re-sampled with `model` (a Resampled, pixels
        on the sampling device), or None when no conditioning area covers them."""
        hw, target = tuple(self.work.shape[1:3]), group[0].target
        places = [(r.image_index, r.crop) for r in group]
        with self.clock("crop"):
            pixels = torch.cat([R.resize(self._crop(r)[None].to(self.device), target) for r in group])
            masks = torch.stack([R.resize(r.mask.to(pixels.device)[None, ..., None], target)[0, ..., 0]
                                 for r in group])
        with self.clock("encode"):
            encoded, reused = encoded_crops(
                self.vae.first_stage_model, [(r.image_index, r.crop, target, self._encode_key) for r in group],
                [self._crop(r) for r in group], [r.mask if self.sampling.inpaint_model else None for r in group],
                lambda todo: encode_crops(self.vae_here, pixels[todo], masks[todo], self.sampling, self.ctx,
                                          self.record), pixels.device)
            self.reused.update(group[i].index for i in reused)
            memo = {}
            pos = RC.for_crops(self.conditioning(self.positive, text), places, hw, target, len(self.work), memo)
            neg = RC.for_crops(self.conditioning(self.negative, negative_text), places, hw, target, len(self.work),
                               memo)
        if pos is None or neg is None:
            self.record.notes.append(f"region #{group[0].index}: no positive/negative conditioning area covers it: "
                                     "left unchanged")
            return None
        control = group[0].control
        if control is not None:  # an Impact Pack SEG's ControlNet wrapper, called the way Impact's detailer does
            pos, neg, _ = control.apply(pos, neg, pixels, masks)
            if hasattr(control, "doit_ipadapter"):
                model, _ = control.doit_ipadapter(model)
        seeds = [self.seed + r.index for r in group]
        return resample(model, pos, neg, self.vae_here, pixels, masks, seeds, self.sampling, self.ctx, self.record,
                        self.clock, encoded)


def _names(regions) -> str:
    return ", ".join(f"#{r.index} {r.label}" for r in regions)


def _sample_problem(regions, unet: str) -> str:
    return (f"the sampled latent of region(s) {_names(regions)} is non-finite (NaN/Inf) after sampling (unet "
            f"{unet}): the model or sampler produced it (e.g. a LoRA or merge with NaN weights, or a UNet overflowing "
            "in fp16), not the VAE")
