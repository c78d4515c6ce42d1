"""Detailer: regions from a detector, SEGS or a MASK, masks refined by SAM, crops re-sampled in same-size batches,
pasted back. NODES gathers the feature's nodes (the Detailer, its options nodes, Detect SEGS)."""
from __future__ import annotations

import comfy.model_management as mm
import comfy.samplers
from comfy_api.latest import io

from ..host.attach import find_context
from ..host.checks import check_image, warn_bf16_image
from ..host.facts import resolution
from ..host.inputs import Combo
from ..host.records import recording, ui_payload
from ..host.types import CATEGORY, SegsType
from ..precision.conform import conform
from ..precision.errors import PrecisionError
from ..regions import prompts as P
from ..regions import segs as S
from ..regions.options import GUIDE_SIZE_FOR, TILED_VAE, CropOptions, DetectionOptions, SamOptions, SamplingOptions
from ..regions.stages import StageClock
from .detect_segs import DetectSegs
from .find import find_regions, report
from .inputs import REGION_SOURCE_INPUTS
from .options_nodes import DetailerDetectionOptions, DetailerSamOptions
from .pipeline import Detail
from .sampling import has_inpaint_channels, sampling_model


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
                Combo("guide_size_for", options=list(GUIDE_SIZE_FOR), default="bbox",
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
                Combo("sampler_name", options=list(comfy.samplers.KSampler.SAMPLERS), default="euler",
                      tooltip="Sampler (samplers that draw their own noise give slightly different results "
                              "batched than one by one)."),
                Combo("scheduler", options=list(comfy.samplers.KSampler.SCHEDULERS), default="normal",
                      tooltip="Noise schedule."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Region i (in order, over the whole batch) uses seed + i."),
                io.Int.Input("cycles", default=1, min=1, max=10,
                             tooltip="Re-sample each region's latent this many times (seed + cycle), decoding once."),
                io.Int.Input("max_batch", default=0, min=0, max=64,
                             tooltip="Most regions sampled together (0: all of the same size). Lower it if "
                                     "memory runs out; 1 samples regions one by one."),
                Combo("tiled_vae", options=list(TILED_VAE), default="off",
                      tooltip="Encode and/or decode the crops in tiles (saves memory on large crops; "
                              "out-of-memory falls back to tiles anyway)."),
                io.Int.Input("tile_size", default=512, min=64, max=4096, step=64,
                             tooltip="Tile size in pixels for tiled_vae."),
                *REGION_SOURCE_INPUTS,
                io.Clip.Input("clip", optional=True, tooltip="Needed only for region prompts."),
                io.String.Input("region_prompts", default="", multiline=True, optional=True,
                                tooltip="Per-region prompts, one per line: 'text' for the next region in order, "
                                        "'[face] text' for every region labelled face, '[#2] text' for region 2, "
                                        "'[skip]' to leave a region alone. They replace positive's text; its "
                                        "ControlNet, areas and masks stay. Empty line: the positive input."),
                io.String.Input("region_negative_prompts", default="", multiline=True, optional=True,
                                tooltip="Per-region negative prompts, same keys as region_prompts."),
                io.Sampler.Input("sampler", optional=True,
                                 tooltip="A custom sampler (KSamplerSelect, Detail Daemon, ...), used for every region "
                                         "instead of sampler_name, as SamplerCustom does."),
                io.Sigmas.Input("sigmas", optional=True,
                                tooltip="A custom noise schedule (BasicScheduler, Detail Daemon, ...), used for every "
                                        "region instead of steps / scheduler / denoise (its first sigma sets how much "
                                        "is re-generated)."),
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
    def execute(cls, image, model, positive, negative, vae, *, guide_size: int, guide_size_for: str, max_size: int,
                force_inpaint: bool, feather: int, noise_mask: bool, noise_mask_feather: int, inpaint_model: bool,
                denoise: float, steps: int, cfg: float, sampler_name: str, scheduler: str, seed: int, cycles: int,
                max_batch: int, tiled_vae: str, tile_size: int, detector=None, segs=None, mask=None, sam=None,
                detection=None, sam_options=None, context=None, clip=None, region_prompts: str = "",
                region_negative_prompts: str = "", sampler=None, sigmas=None) -> io.NodeOutput:
        with recording(cls, image, model, vae, clip, mask) as run:
            record = run.record
            ctx, record.context_source = find_context(context, model, vae)
            device = mm.get_torch_device()
            clock = StageClock(device)
            work = conform(image, resolution(ctx, "intermediate"), ctx.on_mismatch, image.device, record=record,
                           input_name="image")
            check_image(record, work, ctx)
            out_dtype = work.dtype
            warn_bf16_image(record, work)  # the output keeps this dtype
            work = work.float().cpu()  # region finding and crop math on the CPU; models get their own casts
            try:
                crop_opts = CropOptions(guide_size=guide_size, guide_size_for=guide_size_for, max_size=max_size,
                                        force_inpaint=force_inpaint, feather=feather)
                sampling = SamplingOptions(steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler,
                                           denoise=denoise, noise_mask=noise_mask,
                                           noise_mask_feather=noise_mask_feather, inpaint_model=inpaint_model,
                                           cycles=cycles, tile_size=tile_size, sampler=sampler, sigmas=sigmas,
                                           **SamplingOptions.tiling(tiled_vae))
            except ValueError as e:
                raise PrecisionError(record.node, f"{e}.", "adjust the input named.") from None
            regions = find_regions(work, sam, detection or DetectionOptions(), sam_options or SamOptions(), crop_opts,
                                   ctx, device, record, clock, detector=detector, segs=segs, mask=mask)
            if sampling.tiled_encode or sampling.tiled_decode:
                record.notes.append(f"vae {tiled_vae} tiled in {sampling.tile_size}-px tiles")
            if sampling.inpaint_model and not has_inpaint_channels(model):
                record.warnings.append("inpaint_model is on but the MODEL has no inpaint channels: it samples as an "
                                       "ordinary model (use an inpainting checkpoint).")
            if sampling.custom:
                record.notes.append(sampling.custom)
            detail = Detail(work, model, sampling_model(model, ctx, sampling), positive, negative, vae, clip,
                            sampling, crop_opts, seed, max_batch, ctx, record, clock)
            out = detail.run(regions, P.parse(region_prompts), P.parse(region_negative_prompts))
            kept = [r for r in regions if r.index not in out.skipped]  # Impact's detailer drops skipped SEGs too
            segs_out = S.from_regions(kept, tuple(work.shape[1:3]), work.shape[0], out.crops)
            record.stages = clock.as_dict()
        text = report(regions, record, lambda r: "not detailed" if r.index not in out.detailed else
                      f"sampled at {r.target[1]}x{r.target[0]}"
                      + (", from the latent of an earlier encode of the same pixels" if r.index in detail.reused else ""))
        return io.NodeOutput(*run.carry(out.image.to(out_dtype), out.mask), out.before, out.after, text, segs_out,
                             ui=ui_payload(record, text))

NODES = [Detailer, DetailerDetectionOptions, DetailerSamOptions, DetectSegs]
