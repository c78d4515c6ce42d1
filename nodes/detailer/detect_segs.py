"""Detect SEGS: a detector (and optionally SAM) at the context's dtypes -> SEGS laid out as Impact Pack's."""
from __future__ import annotations

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..host.attach import find_context
from ..host.facts import resolution
from ..host.records import recording, ui_payload
from ..host.types import CATEGORY, DetectorType, SegsType
from ..precision.conform import conform
from ..regions import segs as S
from ..regions.options import DetectionOptions, SamOptions
from ..regions.stages import StageClock
from .find import find_regions, report
from .inputs import REGION_SOURCE_INPUTS


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
                *[i for i in REGION_SOURCE_INPUTS if i.id in ("sam", "detection", "sam_options", "context")],
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
        with recording(cls, image) as run:
            record = run.record
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
        text = report(regions, record, lambda r: f"crop {r.crop}")
        return io.NodeOutput(segs, *run.carry(mask), text, ui=ui_payload(record, text))
