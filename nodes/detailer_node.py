"""Detailer: detect regions, refine their masks, re-sample the crops in same-size batches, paste them back."""
from __future__ import annotations

import comfy.model_management as mm
import comfy.samplers
import comfy.utils
import torch
from comfy_api.latest import io

from .detailer import regions as R
from .detect.sam import refine_boxes
from .detect.yolo import detect
from .host.attach import find_context, model_with_policy
from .host.checks import check_image, warn_bf16_image
from .host.node_report import recording
from .host.region_sampling import SamplingOptions, resample
from .host.resolver import resolution
from .precision.conform import conform
from .precision.diagnose import explain_dtype_errors
from .precision.errors import PrecisionError
from .types import CATEGORY, DetectorType, PrecisionContextType, SamType


def _tip(text):
    return {"tooltip": text}


class Detailer(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PrecisionSafeDetailer",
            display_name="Detailer (precision-safe)",
            category=f"{CATEGORY}/detailer",
            description="Finds regions with an ultralytics detector (segm masks, or SAM turning boxes into masks), "
                        "re-samples each crop at a useful size and pastes it back through a feathered mask; pixels "
                        "outside the masks stay exactly as they were. Crops of the same size are sampled as one "
                        "batch (per-region seeds). Detector, SAM, VAE and sampler each run at their role's dtype "
                        "under the precision context, with casts at every boundary.",
            inputs=[
                io.Image.Input("image", tooltip="Images to detail (any float dtype; a batch works)."),
                io.Model.Input("model", tooltip="The diffusion model used to re-sample the crops."),
                io.Conditioning.Input("positive", tooltip="Prompt for the regions (unless region_prompts is set)."),
                io.Conditioning.Input("negative", tooltip="Negative prompt."),
                io.Vae.Input("vae", tooltip="VAE for encoding crops and decoding the result."),
                DetectorType.Input("detector", tooltip="From Detector Loader (bbox or segm model)."),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Minimum detection confidence."),
                io.Int.Input("dilation", default=4, min=-64, max=64,
                             tooltip="Grow (or shrink, negative) each mask by this many pixels."),
                io.Float.Input("crop_factor", default=2.0, min=1.0, max=10.0, step=0.1,
                               tooltip="Crop this many times the box size around it: context for the sampler."),
                io.Int.Input("guide_size", default=512, min=16, max=4096, step=8,
                             tooltip="Regions are scaled so the box's longer side reaches this size before sampling."),
                io.Int.Input("max_size", default=1024, min=16, max=4096, step=8,
                             tooltip="Upper bound for the longer side of the scaled crop."),
                io.Int.Input("drop_size", default=10, min=1, max=4096,
                             tooltip="Ignore boxes whose shorter side is smaller than this (pixels)."),
                io.Float.Input("min_area_ratio", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Ignore boxes smaller than this fraction of the image area."),
                io.Float.Input("max_area_ratio", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Ignore boxes larger than this fraction of the image area."),
                io.Int.Input("top_k", default=0, min=0, max=100, tooltip="Keep at most this many regions (0: all)."),
                io.Combo.Input("sort_by", options=list(R.SORTS), default="confidence",
                               tooltip="Order of regions (top_k, seeds and region_prompts follow it)."),
                io.Int.Input("feather", default=5, min=0, max=100,
                             tooltip="Soften the mask edge inward by this many pixels when pasting."),
                io.Boolean.Input("noise_mask", default=True,
                                 tooltip="Only re-sample inside the mask (the crop's context stays as is)."),
                io.Float.Input("denoise", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of each crop is re-generated."),
                io.Int.Input("steps", default=20, min=1, max=1000, tooltip="Sampling steps."),
                io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1, tooltip="Classifier-free guidance."),
                io.Combo.Input("sampler_name", options=list(comfy.samplers.KSampler.SAMPLERS), default="euler",
                               tooltip="Sampler (samplers that draw their own noise give slightly different results "
                                       "batched than one by one)."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.KSampler.SCHEDULERS), default="normal",
                               tooltip="Noise schedule."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Region i (in sort order, over the whole batch) uses seed + i."),
                io.Int.Input("cycles", default=1, min=1, max=10, tooltip="Re-sample each region this many times."),
                io.Int.Input("max_batch", default=0, min=0, max=64,
                             tooltip="Most regions sampled together (0: all of the same size). Lower it if "
                                     "memory runs out; 1 samples regions one by one."),
                SamType.Input("sam", optional=True, tooltip="Optional SAM: turns each box into a mask "
                                                            "(a segm detector's own masks are used otherwise)."),
                io.Clip.Input("clip", optional=True, tooltip="Needed only for region_prompts."),
                io.String.Input("region_prompts", default="", multiline=True, optional=True,
                                tooltip="One prompt per line for regions 0, 1, ... in sort order; an empty line "
                                        "uses the positive input."),
                PrecisionContextType.Input("context", optional=True,
                                           tooltip="Precision context (else one attached to the MODEL/VAE, else auto)."),
            ],
            outputs=[
                io.Image.Output("detailed", tooltip="The images with the regions re-sampled."),
                io.Mask.Output("mask", tooltip="Union of the (feathered) masks used for pasting."),
                io.Image.Output("crops_before", is_output_list=True, tooltip="Each region's crop before."),
                io.Image.Output("crops_after", is_output_list=True, tooltip="Each region's crop after."),
                io.String.Output("report", tooltip="What was found and what ran at which dtype."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, image, model, positive, negative, vae, detector, threshold, dilation, crop_factor, guide_size,
                max_size, drop_size, min_area_ratio, max_area_ratio, top_k, sort_by, feather, noise_mask, denoise,
                steps, cfg, sampler_name, scheduler, seed, cycles, max_batch, sam=None, clip=None, region_prompts="",
                context=None) -> io.NodeOutput:
        with recording("Detailer", cls.hidden.unique_id) as record:
            ctx, record.context_source = find_context(context, model, vae)
            device = mm.get_torch_device()
            work = conform(image, resolution(ctx, "intermediate"), ctx.on_mismatch, image.device, record=record,
                           input_name="image")
            check_image(record, work, ctx)
            out_dtype = work.dtype
            warn_bf16_image(record, work)  # the output keeps this dtype
            work = work.float().cpu()  # crop/scale/paste math in fp32 on the CPU; models get their own casts
            regions = cls._find_regions(work, detector, sam, ctx, device, record, threshold=threshold,
                                        dilation=dilation, crop_factor=crop_factor, guide_size=guide_size,
                                        max_size=max_size, drop_size=drop_size, min_area_ratio=min_area_ratio,
                                        max_area_ratio=max_area_ratio, top_k=top_k, sort_by=sort_by)
            prompts = [p.strip() for p in (region_prompts or "").splitlines()]
            if any(prompts) and clip is None:
                raise PrecisionError(record.node, "region_prompts is set but no CLIP is connected.",
                                     "connect the clip input, or clear region_prompts.", "clip")
            opts = SamplingOptions(steps, cfg, sampler_name, scheduler, denoise, noise_mask)
            sampler_model, _ = model_with_policy(model, ctx)  # a clone: the shared MODEL is not touched
            result, mask_out, before, after = cls._detail(work, regions, prompts, sampler_model, positive,
                                                          negative, vae, clip, opts, seed, cycles, feather,
                                                          max_batch, ctx, record)
        text = cls._report(regions, record)
        return io.NodeOutput(result.to(out_dtype), mask_out, before, after, text,
                             ui={"text": [text], "precision_safe": [record.to_dict()]})

    @staticmethod
    def _find_regions(work, detector, sam, ctx, device, record, **sel) -> list[R.Region]:
        det = resolution(ctx, "detector", device=device)
        det_dtype = det.dtype
        record.ran_at("detector", det.name, det.device)
        with explain_dtype_errors(f"{record.node} / detect", modules={"detector": detector.model.model},
                                  inputs={"image": work}):
            dets = detect(detector.model, work, dtype=det_dtype, device=device, conf=sel["threshold"],
                          imgsz=detector.imgsz)
        regions, hw = [], tuple(work.shape[1:3])
        for b, d in enumerate(dets):
            keep = R.select(d.boxes, d.scores, hw, threshold=sel["threshold"], drop_size=sel["drop_size"],
                            min_area_ratio=sel["min_area_ratio"], max_area_ratio=sel["max_area_ratio"],
                            sort_by=sel["sort_by"], top_k=sel["top_k"])
            if not keep:
                continue
            masks = d.masks[keep] if d.masks is not None else None
            if sam is not None:
                sam_want = resolution(ctx, "sam", device=device)
                sam_dtype = sam_want.dtype
                record.ran_at("sam", f"{sam_want.name} encoder, fp32 prompt/decoder", sam_want.device)
                with explain_dtype_errors(f"{record.node} / sam", modules={"sam": sam.model},
                                          inputs={"image": work}):
                    masks = refine_boxes(sam.model, work[b], d.boxes[keep], dtype=sam_dtype, device=device)
            for j, i in enumerate(keep):
                box = tuple(d.boxes[i].tolist())
                crop = R.crop_box(box, hw, sel["crop_factor"])
                x0, y0, x1, y1 = crop
                m = masks[j][y0:y1, x0:x1].float() if masks is not None else R.box_mask(box, crop)
                m = R.dilate(m, sel["dilation"])
                if m.sum() == 0:
                    record.notes.append(f"image {b}: {d.class_names[i]} at {tuple(round(v) for v in box)} "
                                        "has an empty mask: skipped")
                    continue
                target = R.target_size((y1 - y0, x1 - x0), (box[3] - box[1], box[2] - box[0]),
                                       sel["guide_size"], sel["max_size"])
                regions.append(R.Region(b, len(regions), d.class_names[i], float(d.scores[i]), box, crop,
                                        target, m))
        if not regions:
            record.notes.append("no regions detected: image passed through unchanged")
        return regions

    @staticmethod
    def _detail(work, regions, prompts, model, positive, negative, vae, clip, opts, seed, cycles, feather, max_batch,
                ctx, record):
        result = work.clone()
        mask_out = torch.zeros(work.shape[:3])
        before, after = [], []
        prompt_of = lambda r: prompts[r.index] if r.index < len(prompts) else ""  # noqa: E731
        groups = R.group_by_size(regions, key=lambda r: (r.target, prompt_of(r)), max_batch=max_batch)
        pbar = comfy.utils.ProgressBar(max(1, len(groups) * cycles))
        for n, group in enumerate(groups):
            cond = positive
            if prompt_of(group[0]):
                cond = clip.encode_from_tokens_scheduled(clip.tokenize(prompt_of(group[0])))
            crops = [work[r.image_index, r.crop[1]:r.crop[3], r.crop[0]:r.crop[2]] for r in group]
            pixels = torch.cat([R.resize(c[None], group[0].target) for c in crops])
            masks = torch.stack([R.resize(r.mask[None, ..., None], r.target)[0, ..., 0] for r in group])
            for c in range(cycles):
                mm.throw_exception_if_processing_interrupted()  # stop between batches
                pixels = resample(model, cond, negative, vae, pixels, masks, [seed + r.index + c for r in group],
                                  opts, ctx, record)
                pbar.update(1)
            record.notes.append(f"batch {n + 1}/{len(groups)}: {len(group)} region(s) at "
                                f"{group[0].target[1]}x{group[0].target[0]}")
            for r, crop, new in zip(group, crops, pixels):
                h, w = r.crop_size
                patch = R.resize(new[None], (h, w))[0]
                soft = R.feather(r.mask, feather)
                result[r.image_index] = R.paste(result[r.image_index], patch, r.crop, soft)
                x0, y0, x1, y1 = r.crop
                mask_out[r.image_index, y0:y1, x0:x1] = torch.maximum(mask_out[r.image_index, y0:y1, x0:x1], soft)
                before.append(crop[None].clone())
                after.append(patch[None])
        return result, mask_out, before, after

    @staticmethod
    def _report(regions, record) -> str:
        lines = [f"{len(regions)} region(s)"]
        for r in regions:
            lines.append(f"  #{r.index} image {r.image_index}: {r.label} {r.score:.2f} box "
                         f"{tuple(round(v) for v in r.box)} -> sampled at {r.target[1]}x{r.target[0]}")
        return "\n".join(lines) + "\n" + record.to_text()
