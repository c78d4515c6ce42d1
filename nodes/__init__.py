"""Node glue (ComfyUI V3 schema) around the pure precision logic in `precision/`."""
