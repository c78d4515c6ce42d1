"""Detailer: regions from a detector, SEGS or a MASK, masks refined by SAM, crops re-sampled in same-size batches,
pasted back; plus its options nodes and a detector -> SEGS node for Impact Pack's ecosystem."""
from __future__ import annotations

import dataclasses

import comfy.model_management as mm
import comfy.samplers
import comfy.utils
import torch
from comfy_api.latest import io

from ..detect.sam import refine_boxes
from ..detect.yolo import detect
from ..host.attach import find_context
from ..host.checks import check_image, warn_bf16_image
from ..host.facts import resolution
from ..host.node_report import recording, ui_payload
from ..host.types import (CATEGORY, DetectionOptionsType, DetectorType, PrecisionContextType, SamOptionsType, SamType,
                          SegsType)
from ..precision.conform import conform
from ..precision.diagnose import explain_dtype_errors
from ..precision.errors import PrecisionError
from ..regions import prompts as P
from ..regions import regions as R
from ..regions import segs as S
from ..regions.options import (GUIDE_SIZE_FOR, SAM_HINTS, SORTS, TILED_VAE, CropOptions, DetectionOptions, SamOptions,
                               SamplingOptions, parse_labels)
from ..regions.stages import StageClock
from . import conditioning as RC
from .sampling import has_inpaint_channels, resample, sampling_model

SOURCES = "connect exactly one of: detector (find regions), segs (regions from another node, e.g. Impact Pack's " \
          "detectors and SEGS filters) or mask (regions drawn as a MASK)."


def _fields(cls, values: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


# ----------------------------------------------------------------------------------------- finding regions

def _candidates(work, detector, segs, mask, det_opts, ctx, device, record, clock) -> list[R.Candidate]:
    """The candidates of every image, selected and in order."""
    given = [name for name, value in (("detector", detector), ("segs", segs), ("mask", mask)) if value is not None]
    if len(given) != 1:
        found = " and ".join(given) + " are" if given else "no region source is"
        raise PrecisionError(record.node, f"{found} connected.", SOURCES, given[1] if len(given) > 1 else "detector")
    hw, batch = tuple(work.shape[1:3]), work.shape[0]
    with clock("detect"):
        if detector is not None:
            det = resolution(ctx, "detector", device=device)
            det_dtype = det.dtype
            record.ran_at("detector", det.name, det.device)
            with explain_dtype_errors(f"{record.node} / detect", modules={"detector": detector.model.model},
                                      inputs={"image": work}):
                dets = detect(detector.model, work, dtype=det_dtype, device=device, conf=det_opts.threshold,
                              imgsz=detector.imgsz)
            cands = [R.Candidate(b, tuple(d.boxes[i].tolist()), float(d.scores[i]), d.class_names[i],
                                 mask=d.masks[i] if d.masks is not None else None)
                     for b, d in enumerate(dets) for i in range(len(d))]
        elif segs is not None:
            try:
                cands = S.to_candidates(segs, hw, batch, record.notes)
            except S.SegsError as e:
                raise PrecisionError(record.node, str(e) + ".", "connect a SEGS output (Impact Pack's detectors, "
                                     "SEGS filters, or this pack's Detect SEGS).", "segs") from None
        else:
            if mask.shape[-2:] != hw or mask.ndim not in (2, 3) or (mask.ndim == 3 and mask.shape[0] not in (1, batch)):
                raise PrecisionError(record.node, f"the MASK has shape {tuple(mask.shape)} but the image batch is "
                                     f"{batch}x{hw[0]}x{hw[1]}.", "give a mask of the image's size (one, or one per "
                                     "image), e.g. resize it with a mask scaling node.", "mask")
            cands = S.mask_candidates(mask, batch)
    out = []
    for b in range(batch):
        out += R.select([c for c in cands if c.image_index == b], hw, det_opts, detected=segs is None)
    return out


def _refine_with_sam(work, cands, sam, opts: SamOptions, ctx, device, record, clock) -> list[R.Candidate]:
    """Each candidate's mask replaced by SAM's (one image-encoder pass per image, all prompts decoded together)."""
    sam_want = resolution(ctx, "sam", device=device)
    sam_dtype = sam_want.dtype
    record.ran_at("sam", f"{sam_want.name} encoder, fp32 prompt/decoder", sam_want.device)
    hw = tuple(work.shape[1:3])
    out = []
    with clock("sam"):
        for b in sorted({c.image_index for c in cands}):
            mine = [c for c in cands if c.image_index == b]
            prompts = [R.sam_prompt(c, opts, hw) for c in mine]
            with explain_dtype_errors(f"{record.node} / sam", modules={"sam": sam.model}, inputs={"image": work}):
                masks = refine_boxes(sam.model, work[b], [p[0] for p in prompts], dtype=sam_dtype, device=device,
                                     points=[p[1] for p in prompts], multimask=opts.multimask,
                                     score_threshold=opts.score_threshold)
            for c, m in zip(mine, masks):
                if c.crop is None:
                    out.append(dataclasses.replace(c, mask=m))
                else:
                    x0, y0, x1, y1 = c.crop
                    out.append(dataclasses.replace(c, crop_mask=m[y0:y1, x0:x1]))
    return out


def find_regions(work, sam, det_opts, sam_opts, crop_opts, ctx, device, record, clock, detector=None, segs=None,
                 mask=None) -> list[R.Region]:
    """Regions of the batch in processing order, with their crops, masks and (with crop_opts) sampling sizes."""
    cands = _candidates(work, detector, segs, mask, det_opts, ctx, device, record, clock)
    if sam is not None and cands:
        cands = _refine_with_sam(work, cands, sam, sam_opts, ctx, device, record, clock)
    hw = tuple(work.shape[1:3])
    regions = []
    with clock("crop"):
        for c in cands:
            if c.crop is not None:  # a SEG: its crop region and mask as given
                crop, m, dilation = c.crop, c.crop_mask, 0
            else:
                crop = R.crop_box(c.box, hw, det_opts.crop_factor)
                x0, y0, x1, y1 = crop
                m = c.mask[y0:y1, x0:x1] if c.mask is not None else R.box_mask(c.box, crop)
                dilation = det_opts.dilation
            m = R.dilate(m.float(), sam_opts.dilation if sam is not None else dilation)
            where = f"image {c.image_index}: {c.label} at {tuple(round(v) for v in c.box)}"
            if m.sum() == 0:
                record.notes.append(f"{where} has an empty mask: skipped")
                continue
            x0, y0, x1, y1 = crop
            box_hw = (c.box[3] - c.box[1], c.box[2] - c.box[0])
            target = R.sample_size((y1 - y0, x1 - x0), box_hw, crop_opts) if crop_opts is not None else None
            regions.append(R.Region(c.image_index, len(regions), c.label, c.score, c.box, crop, m, target,
                                    c.control))
    if not regions:
        record.notes.append("no regions found: image passed through unchanged")
    return regions


# ------------------------------------------------------------------------------------------ detailing them

@dataclasses.dataclass
class _Result:
    image: torch.Tensor  # the detailed batch
    mask: torch.Tensor  # union of the feathered paste masks
    before: list = dataclasses.field(default_factory=list)  # crops of the regions that went through, before
    after: list = dataclasses.field(default_factory=list)  # ... and after (unchanged where nothing was pasted)
    crops: dict = dataclasses.field(default_factory=dict)  # region index -> crop for the SEGS output
    detailed: set = dataclasses.field(default_factory=set)  # indices of regions pasted back
    skipped: set = dataclasses.field(default_factory=set)  # indices of regions a [skip] prompt left out


@dataclasses.dataclass
class _Detail:
    """One Detailer run's state while it samples its batches."""

    work: torch.Tensor
    model: object
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

    def conditioning(self, base, text: str):
        if not text:
            return base
        if text not in self.texts:
            self.texts[text] = self.clip.encode_from_tokens_scheduled(self.clip.tokenize(text))
        return RC.with_text(base, self.texts[text])

    def run(self, regions, prompts, negatives) -> "_Result":
        out = _Result(self.work.clone(), torch.zeros(self.work.shape[:3]))
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
        if self.sampling.denoise == 0:
            if todo:
                self.record.notes.append("denoise 0: nothing re-sampled, the image is unchanged")
            out.crops.update({r.index: self._crop(r) for r in todo})
            return out
        texts = lambda r: (prompts.text_for(r.index, r.label), negatives.text_for(r.index, r.label))  # noqa: E731
        if self.clip is None and any(t for r in todo for t in texts(r)):
            raise PrecisionError(self.record.node, "a region prompt is set but no CLIP is connected.",
                                 "connect the clip input, or clear region_prompts / region_negative_prompts.", "clip")
        single = RC.needs_single_crop(self.positive) or RC.needs_single_crop(self.negative)
        groups = R.group_by_size(todo, key=lambda r: (r.target, texts(r), id(r.control) if r.control else None,
                                                      r.index if single else None), max_batch=self.max_batch)
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
                        soft = R.feather(r.mask, self.crop.feather)
                        R.paste_into(out.image[r.image_index], patch, r.crop, soft)  # the node's own copy
                        x0, y0, x1, y1 = r.crop
                        area = out.mask[r.image_index, y0:y1, x0:x1]
                        out.mask[r.image_index, y0:y1, x0:x1] = torch.maximum(area, soft)
                        out.detailed.add(r.index)
                    out.before.append(original[None])
                    out.after.append((original if patch is None else patch)[None])
                    out.crops[r.index] = original if patch is None else patch
            pbar.update(1)
        return out

    def _crop(self, r) -> torch.Tensor:
        x0, y0, x1, y1 = r.crop
        return self.work[r.image_index, y0:y1, x0:x1]

    def _batch(self, group, text, negative_text):
        """Sample one group; [(region, patch at crop size or None when it must keep its pixels)]."""
        ctx, record = self.ctx, self.record
        hw, target = tuple(self.work.shape[1:3]), group[0].target
        places = [(r.image_index, r.crop) for r in group]
        with self.clock("crop"):
            pixels = torch.cat([R.resize(self._crop(r)[None], target) for r in group])
            masks = torch.stack([R.resize(r.mask[None, ..., None], target)[0, ..., 0] for r in group])
        with self.clock("encode"):
            memo = {}
            pos = RC.for_crops(self.conditioning(self.positive, text), places, hw, target, len(self.work), memo)
            neg = RC.for_crops(self.conditioning(self.negative, negative_text), places, hw, target, len(self.work),
                               memo)
        if pos is None or neg is None:
            record.notes.append(f"region #{group[0].index}: no positive/negative conditioning area covers it: "
                                "left unchanged")
            return [(r, None) for r in group]
        model, control = self.model, group[0].control
        if control is not None:  # an Impact Pack SEG's ControlNet wrapper, called the way Impact's detailer does
            pos, neg, _ = control.apply(pos, neg, pixels, masks)
            if hasattr(control, "doit_ipadapter"):
                model, _ = control.doit_ipadapter(model)
        seeds = [self.seed + r.index for r in group]
        res = resample(model, pos, neg, self.vae, pixels, masks, seeds, self.sampling, ctx, record, self.clock)
        self._report_nonfinite(group, res)
        failed = set(res.failed)
        return [(r, None if i in failed else R.resize(res.pixels[i:i + 1], r.crop_size)[0])
                for i, r in enumerate(group)]

    def _report_nonfinite(self, group, res):
        names = lambda items: ", ".join(f"#{group[i].index} {group[i].label}" for i in items)  # noqa: E731
        if res.nonfinite_samples:
            unet = self.record.ran.get("unet", "?")
            problem = (f"the sampled latent of region(s) {names(res.nonfinite_samples)} is non-finite (NaN/Inf) "
                       f"after sampling (unet {unet}): the model or sampler produced it (e.g. a LoRA or merge with "
                       "NaN weights, or a UNet overflowing in fp16), not the VAE.")
            if self.ctx.on_nonfinite == "error":
                raise PrecisionError(self.record.node, problem, "check the MODEL chain (LoRAs, merges), run the UNet "
                                     "at a wider dtype (PrecisionPolicy unet_dtype bf16 or fp32), or set "
                                     "on_nonfinite to 'keep' to leave such regions unchanged.", "model")
            self.record.warnings.append(problem + " Those regions keep their original pixels.")
        if res.nonfinite_decodes:
            self.record.warnings.append(f"region(s) {names(res.nonfinite_decodes)} decoded non-finite (NaN/Inf): "
                                        "they keep their original pixels.")


# ----------------------------------------------------------------------------------------------- the nodes

_REGION_SOURCE_INPUTS = [
    DetectorType.Input("detector", optional=True, tooltip="Find regions with this detector (Detector Loader). "
                                                          "Connect exactly one of detector, segs and mask."),
    SegsType.Input("segs", optional=True, tooltip="Detail these regions: SEGS from Impact Pack's detectors and "
                                                  "filters (or Detect SEGS), their crop regions and masks as given."),
    io.Mask.Input("mask", optional=True, tooltip="Detail each connected area of this MASK (one for all images, or "
                                                 "one per image); crops follow the detection options."),
    SamType.Input("sam", optional=True, tooltip="Optional SAM: refines every region's mask from its box (see SAM "
                                                "options); otherwise segm masks, SEGS masks or the boxes are used."),
    DetectionOptionsType.Input("detection", optional=True,
                               tooltip="Detection options (threshold, labels, dilation, crop factor, ...); "
                                       "defaults when not connected."),
    SamOptionsType.Input("sam_options", optional=True, tooltip="SAM options (hint, score threshold, multimask, box "
                                                               "expansion, dilation); defaults when not connected."),
    PrecisionContextType.Input("context", optional=True,
                               tooltip="Precision context (else one attached to the MODEL/VAE, else auto)."),
]


class Detailer(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PrecisionSafeDetailer",
            display_name="Detailer (precision-safe)",
            category=f"{CATEGORY}/detailer",
            description="FaceDetailer / DetailerForEach-style: regions come from a detector, from SEGS (Impact "
                        "Pack's format, e.g. its detectors and filters) or from a MASK; SAM can refine their masks. "
                        "Each crop is scaled so its box reaches guide_size, re-sampled (inpaint models and soft "
                        "denoise masks supported) and pasted back through a feathered mask; pixels outside the "
                        "masks stay exactly as they were. Crops of one size are sampled as one batch with "
                        "per-region seeds. Detector, SAM, VAE and sampler each run at their role's dtype under the "
                        "precision context; a region whose sample comes out NaN is never pasted. Outputs SEGS of "
                        "the detailed regions for Impact Pack's nodes.",
            inputs=[
                io.Image.Input("image", tooltip="Images to detail (any float dtype; a batch works)."),
                io.Model.Input("model", tooltip="The diffusion model used to re-sample the crops (an inpaint model "
                                                "works with inpaint_model on)."),
                io.Conditioning.Input("positive", tooltip="Prompt for the regions. Its ControlNet hints, areas and "
                                                          "masks are cut to each region's crop."),
                io.Conditioning.Input("negative", tooltip="Negative prompt (cut to each crop like positive)."),
                io.Vae.Input("vae", tooltip="VAE for encoding crops and decoding the result."),
                io.Int.Input("guide_size", default=512, min=16, max=4096, step=8,
                             tooltip="The box's shorter side (or the crop region's, see guide_size_for) is scaled "
                                     "up to this before sampling; small regions get more pixels."),
                io.Combo.Input("guide_size_for", options=list(GUIDE_SIZE_FOR), default="bbox",
                               tooltip="What guide_size refers to: the detected box or the whole crop region."),
                io.Int.Input("max_size", default=1024, min=16, max=4096, step=8,
                             tooltip="Upscaling stops when the crop's longer side reaches this."),
                io.Boolean.Input("force_inpaint", default=True,
                                 tooltip="Also detail regions already larger than guide_size, at their own size "
                                         "(never shrunk). Off: such regions are left alone, as in Impact Pack."),
                io.Int.Input("feather", default=5, min=0, max=100,
                             tooltip="Soften the paste mask's edge inward by this many pixels."),
                io.Boolean.Input("noise_mask", default=True,
                                 tooltip="Re-sample only inside the mask (the crop's context stays as is)."),
                io.Int.Input("noise_mask_feather", default=0, min=0, max=100,
                             tooltip="> 0: a soft denoise mask (blurred by this radius, in sampled pixels) with "
                                     "differential-diffusion steps, so re-sampling fades out across the edge."),
                io.Boolean.Input("inpaint_model", default=False,
                                 tooltip="For inpaint models: give the model the crop with its mask greyed out and "
                                         "the mask in its extra input channels (InpaintModelConditioning's recipe)."),
                io.Float.Input("denoise", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of each crop is re-generated (0: nothing runs, image unchanged)."),
                io.Int.Input("steps", default=20, min=1, max=1000, tooltip="Sampling steps."),
                io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1, tooltip="Classifier-free guidance."),
                io.Combo.Input("sampler_name", options=list(comfy.samplers.KSampler.SAMPLERS), default="euler",
                               tooltip="Sampler (samplers that draw their own noise give slightly different results "
                                       "batched than one by one)."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.KSampler.SCHEDULERS), default="normal",
                               tooltip="Noise schedule."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Region i (in order, over the whole batch) uses seed + i."),
                io.Int.Input("cycles", default=1, min=1, max=10,
                             tooltip="Re-sample each region's latent this many times (seed + cycle), decoding once."),
                io.Int.Input("max_batch", default=0, min=0, max=64,
                             tooltip="Most regions sampled together (0: all of the same size). Lower it if "
                                     "memory runs out; 1 samples regions one by one."),
                io.Combo.Input("tiled_vae", options=list(TILED_VAE), default="off",
                               tooltip="Encode and/or decode the crops in tiles (saves memory on large crops; "
                                       "out-of-memory falls back to tiles anyway)."),
                io.Int.Input("tile_size", default=512, min=64, max=4096, step=64,
                             tooltip="Tile size in pixels for tiled_vae."),
                *_REGION_SOURCE_INPUTS,
                io.Clip.Input("clip", optional=True, tooltip="Needed only for region prompts."),
                io.String.Input("region_prompts", default="", multiline=True, optional=True,
                                tooltip="Per-region prompts, one per line: 'text' for the next region in order, "
                                        "'[face] text' for every region labelled face, '[#2] text' for region 2, "
                                        "'[skip]' to leave a region alone. They replace positive's text; its "
                                        "ControlNet, areas and masks stay. Empty line: the positive input."),
                io.String.Input("region_negative_prompts", default="", multiline=True, optional=True,
                                tooltip="Per-region negative prompts, same keys as region_prompts."),
            ],
            outputs=[
                io.Image.Output("detailed", tooltip="The images with the regions re-sampled."),
                io.Mask.Output("paste_mask", display_name="mask",
                               tooltip="Union of the (feathered) masks used for pasting."),
                io.Image.Output("crops_before", is_output_list=True, tooltip="Each detailed region's crop before."),
                io.Image.Output("crops_after", is_output_list=True, tooltip="Each detailed region's crop after."),
                io.String.Output("report", tooltip="What was found, what ran at which dtype, time per stage."),
                SegsType.Output("detailed_segs", display_name="segs",
                                tooltip="The regions as SEGS (Impact Pack's layout), cropped_image holding each "
                                        "detailed crop: for SEGSPaste, SEGS filters, other detailers."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, image, model, positive, negative, vae, detector=None, segs=None, mask=None, sam=None,
                detection=None, sam_options=None, context=None, clip=None, region_prompts="",
                region_negative_prompts="", **widgets) -> io.NodeOutput:
        with recording("Detailer", cls.hidden.unique_id) as record:
            ctx, record.context_source = find_context(context, model, vae)
            device = mm.get_torch_device()
            clock = StageClock(device)
            work = conform(image, resolution(ctx, "intermediate"), ctx.on_mismatch, image.device, record=record,
                           input_name="image")
            check_image(record, work, ctx)
            out_dtype = work.dtype
            warn_bf16_image(record, work)  # the output keeps this dtype
            work = work.float().cpu()  # crop/scale/paste math in fp32 on the CPU; models get their own casts
            crop_opts = CropOptions(**_fields(CropOptions, widgets))
            sampling = SamplingOptions(**_fields(SamplingOptions, widgets), **SamplingOptions.tiling(widgets["tiled_vae"]))
            regions = find_regions(work, sam, detection or DetectionOptions(), sam_options or SamOptions(), crop_opts,
                                   ctx, device, record, clock, detector=detector, segs=segs, mask=mask)
            if sampling.tiled_encode or sampling.tiled_decode:
                record.notes.append(f"vae {widgets['tiled_vae']} tiled in {sampling.tile_size}-px tiles")
            if sampling.inpaint_model and not has_inpaint_channels(model):
                record.warnings.append("inpaint_model is on but the MODEL has no inpaint channels: it samples as an "
                                       "ordinary model (use an inpainting checkpoint).")
            run = _Detail(work, sampling_model(model, ctx, sampling), positive, negative, vae, clip, sampling,
                          crop_opts, widgets["seed"], widgets["max_batch"], ctx, record, clock)
            out = run.run(regions, P.parse(region_prompts), P.parse(region_negative_prompts))
            kept = [r for r in regions if r.index not in out.skipped]  # Impact's detailer drops skipped SEGs too
            segs_out = S.from_regions(kept, tuple(work.shape[1:3]), work.shape[0], out.crops)
            record.stages = clock.as_dict()
        text = _report(regions, record, lambda r: f"sampled at {r.target[1]}x{r.target[0]}" if r.index in out.detailed
                       else "not detailed")
        return io.NodeOutput(out.image.to(out_dtype), out.mask, out.before, out.after, text, segs_out,
                             ui=ui_payload(record, text))


def _report(regions, record, outcome) -> str:
    lines = [f"{len(regions)} region(s)"]
    for r in regions:
        lines.append(f"  #{r.index} image {r.image_index}: {r.label} {r.score:.2f} box "
                     f"{tuple(round(v) for v in r.box)} -> {outcome(r)}")
    return "\n".join(lines) + "\n" + record.to_text()


class DetailerDetectionOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        d = DetectionOptions()
        return io.Schema(
            node_id="PrecisionSafeDetailerDetectionOptions",
            display_name="Detailer Detection Options",
            category=f"{CATEGORY}/detailer",
            description="Which detections become regions and how their crops and masks are shaped, for the Detailer "
                        "and Detect SEGS. Threshold, dilation, crop factor, drop size and area band apply to "
                        "detector and MASK regions; labels, order and top_k to every source (SEGS too).",
            inputs=[
                io.Float.Input("threshold", default=d.threshold, min=0.0, max=1.0, step=0.01,
                               tooltip="Minimum detection confidence."),
                io.String.Input("labels", default="", tooltip="Keep only regions with these labels, comma-separated "
                                                              "(e.g. 'face, hand'); empty or 'all' keeps every one."),
                io.Int.Input("dilation", default=d.dilation, min=-512, max=512,
                             tooltip="Grow (or shrink, negative) detector and MASK masks by this many pixels "
                                     "(SAM masks have their own dilation; SEGS masks are used as given)."),
                io.Float.Input("crop_factor", default=d.crop_factor, min=1.0, max=10.0, step=0.1,
                               tooltip="Crop this many times the box around it: context for the sampler."),
                io.Int.Input("drop_size", default=d.drop_size, min=1, max=4096,
                             tooltip="Ignore boxes whose shorter side is smaller than this (pixels)."),
                io.Float.Input("min_area_ratio", default=d.min_area_ratio, min=0.0, max=1.0, step=0.001,
                               tooltip="Ignore boxes smaller than this fraction of the image area."),
                io.Float.Input("max_area_ratio", default=d.max_area_ratio, min=0.0, max=1.0, step=0.001,
                               tooltip="Ignore boxes larger than this fraction of the image area."),
                io.Int.Input("top_k", default=d.top_k, min=0, max=100,
                             tooltip="Keep at most this many regions per image, after sorting (0: all)."),
                io.Combo.Input("sort_by", options=list(SORTS), default=d.sort_by,
                               tooltip="Order of regions: top_k, seeds and region prompts follow it ('as given' "
                                       "keeps the detector's or the SEGS' order)."),
            ],
            outputs=[DetectionOptionsType.Output("detection", tooltip="Connect to the Detailer or Detect SEGS.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, labels, **values) -> io.NodeOutput:
        try:
            return io.NodeOutput(DetectionOptions(labels=parse_labels(labels), **values))
        except ValueError as e:
            raise PrecisionError(f"Detailer Detection Options #{cls.hidden.unique_id}", f"{e}.",
                                 "adjust the option named.") from None


class DetailerSamOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        d = SamOptions()
        return io.Schema(
            node_id="PrecisionSafeDetailerSamOptions",
            display_name="Detailer SAM Options",
            category=f"{CATEGORY}/detailer",
            description="How SAM is prompted for each region and which of its masks are kept, for the Detailer and "
                        "Detect SEGS (used only when a SAM is connected).",
            inputs=[
                io.Combo.Input("hint", options=list(SAM_HINTS), default=d.hint,
                               tooltip="box: the box alone. center-1: plus the box's centre as a foreground point. "
                                       "mask-area: plus foreground points where the region's own mask (segm, SEGS "
                                       "or MASK) is above mask_hint_threshold."),
                io.Float.Input("score_threshold", default=d.score_threshold, min=0.0, max=1.0, step=0.01,
                               tooltip="With multimask: keep every candidate SAM scores at least this (their union), "
                                       "or its best one if none is."),
                io.Boolean.Input("multimask", default=d.multimask,
                                 tooltip="Ask SAM for its three candidate masks per region instead of one."),
                io.Int.Input("bbox_expansion", default=d.bbox_expansion, min=0, max=1000,
                             tooltip="Grow the box prompt by this many pixels before SAM sees it."),
                io.Int.Input("dilation", default=d.dilation, min=-512, max=512,
                             tooltip="Grow (or shrink, negative) SAM's masks by this many pixels."),
                io.Float.Input("mask_hint_threshold", default=d.mask_hint_threshold, min=0.0, max=1.0, step=0.01,
                               tooltip="mask-area hint: mask values above this give foreground points."),
            ],
            outputs=[SamOptionsType.Output("sam_options", tooltip="Connect to the Detailer or Detect SEGS.")],
        )

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        return io.NodeOutput(SamOptions(**values))


class DetectSegs(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PrecisionSafeDetectSEGS",
            display_name="Detect SEGS (precision-safe)",
            category=f"{CATEGORY}/detailer",
            description="Runs a detector (and optionally SAM) at the precision context's dtypes and outputs SEGS laid "
                        "out as Impact Pack's detectors lay them out, for Impact's SEGS filters and detailers or "
                        "this pack's Detailer. Crops and masks follow the detection and SAM options.",
            inputs=[
                io.Image.Input("image", tooltip="Image to find regions in (SEGS describe one image size; a batch "
                                                "gives per-image masks)."),
                DetectorType.Input("detector", tooltip="From Detector Loader (bbox or segm model)."),
                *[i for i in _REGION_SOURCE_INPUTS if i.id in ("sam", "detection", "sam_options", "context")],
            ],
            outputs=[
                SegsType.Output("segs", tooltip="The regions as SEGS, cropped_image holding each crop."),
                io.Mask.Output("mask", tooltip="Union of the regions' masks."),
                io.String.Output("report", tooltip="What was found and what ran at which dtype."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, image, detector, sam=None, detection=None, sam_options=None, context=None) -> io.NodeOutput:
        with recording("Detect SEGS", cls.hidden.unique_id) as record:
            ctx, record.context_source = find_context(context)
            device = mm.get_torch_device()
            clock = StageClock(device)
            work = conform(image, resolution(ctx, "intermediate"), ctx.on_mismatch, image.device, record=record,
                           input_name="image").float().cpu()
            regions = find_regions(work, sam, detection or DetectionOptions(), sam_options or SamOptions(), None, ctx,
                                   device, record, clock, detector=detector)
            mask = torch.zeros(work.shape[:3])
            crops = {}
            for r in regions:
                x0, y0, x1, y1 = r.crop
                crops[r.index] = work[r.image_index, y0:y1, x0:x1]
                mask[r.image_index, y0:y1, x0:x1] = torch.maximum(mask[r.image_index, y0:y1, x0:x1], r.mask)
            segs = S.from_regions(regions, tuple(work.shape[1:3]), work.shape[0], crops)
            record.stages = {k: v for k, v in clock.as_dict().items() if k in ("detect", "sam", "crop")}
        text = _report(regions, record, lambda r: f"crop {r.crop}")
        return io.NodeOutput(segs, mask, text, ui=ui_payload(record, text))

NODES = [Detailer, DetailerDetectionOptions, DetailerSamOptions, DetectSegs]
