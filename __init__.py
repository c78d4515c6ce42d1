"""Precision-safe nodes for ComfyUI. Thin and import-safe: without ComfyUI (e.g. in unit tests) it loads nothing."""
WEB_DIRECTORY = "./web"

try:
    import comfy_api.latest  # noqa: F401  (present only inside a ComfyUI host)
except ImportError:
    comfy_entrypoint = None
else:
    from .nodes.extension import comfy_entrypoint  # noqa: F401

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
