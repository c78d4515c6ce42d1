"""In-process tests: ComfyUI's tree on sys.path (for comfy_execution.graph_utils at collection time)."""
import sys

from comfy_client import COMFY_DIR

if COMFY_DIR not in sys.path:
    sys.path.insert(0, COMFY_DIR)
