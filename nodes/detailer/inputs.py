"""The region-source inputs the Detailer and Detect SEGS share (same ids, types and tooltips on both nodes)."""
from __future__ import annotations

from comfy_api.latest import io

from ..host.types import DetectionOptionsType, DetectorType, PrecisionContextType, SamOptionsType, SamType, SegsType

REGION_SOURCE_INPUTS = [
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

