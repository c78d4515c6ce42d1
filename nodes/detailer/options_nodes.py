"""The Detailer's options nodes: detection options and SAM options, each output one immutable options value."""
from __future__ import annotations

from comfy_api.latest import io

from ..host.inputs import Combo
from ..host.records import node_label
from ..host.types import CATEGORY, DetectionOptionsType, SamOptionsType
from ..precision.errors import PrecisionError
from ..regions.options import SAM_HINTS, SORTS, DetectionOptions, SamOptions, parse_labels


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
                Combo("sort_by", options=list(SORTS), default=d.sort_by,
                      tooltip="Order of regions: top_k, seeds and region prompts follow it ('as given' "
                              "keeps the detector's or the SEGS' order)."),
            ],
            outputs=[DetectionOptionsType.Output("detection", tooltip="Connect to the Detailer or Detect SEGS.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, threshold: float, labels: str, dilation: int, crop_factor: float, drop_size: int,
                min_area_ratio: float, max_area_ratio: float, top_k: int, sort_by: str) -> io.NodeOutput:
        try:
            return io.NodeOutput(DetectionOptions(
                threshold=threshold, labels=parse_labels(labels), dilation=dilation, crop_factor=crop_factor,
                drop_size=drop_size, min_area_ratio=min_area_ratio, max_area_ratio=max_area_ratio, top_k=top_k,
                sort_by=sort_by))
        except ValueError as e:
            raise PrecisionError(node_label(cls), f"{e}.",
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
                Combo("hint", options=list(SAM_HINTS), default=d.hint,
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
    def execute(cls, hint: str, score_threshold: float, multimask: bool, bbox_expansion: int, dilation: int,
                mask_hint_threshold: float) -> io.NodeOutput:
        return io.NodeOutput(SamOptions(hint=hint, score_threshold=score_threshold, multimask=multimask,
                                        bbox_expansion=bbox_expansion, dilation=dilation,
                                        mask_hint_threshold=mask_hint_threshold))

