"""The pack's custom graph type: the immutable PrecisionContext travels on PRECISION_CONTEXT edges."""
from comfy_api.latest import io

PrecisionContextType = io.Custom("PRECISION_CONTEXT")

CATEGORY = "precision safe"
DetectorType = io.Custom("PRECISION_SAFE_DETECTOR")  # a LoadedDetector
SamType = io.Custom("PRECISION_SAFE_SAM")  # a LoadedSam
