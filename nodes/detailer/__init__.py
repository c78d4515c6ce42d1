"""Detailer: its nodes (Detailer, options, Detect SEGS, loaders) and the ComfyUI side of its pipeline (region
sampling and conditioning, model folders). Its pure logic is in `regions/`."""
