"""The pack's custom graph types: the immutable PrecisionContext travels on PRECISION_CONTEXT edges; the
Detailer's loaders, options and regions on theirs."""
from comfy_api.latest import io

PrecisionContextType = io.Custom("PRECISION_CONTEXT")

CATEGORY = "precision safe"
DetectorType = io.Custom("PRECISION_SAFE_DETECTOR")  # a LoadedDetector
SamType = io.Custom("PRECISION_SAFE_SAM")  # a LoadedSam
SegsType = io.Custom("SEGS")  # Impact Pack's region type, same name and layout (detailer/segs.py)
DetectionOptionsType = io.Custom("PRECISION_SAFE_DETECTION_OPTIONS")  # a detailer.options.DetectionOptions
SamOptionsType = io.Custom("PRECISION_SAFE_SAM_OPTIONS")  # a detailer.options.SamOptions
