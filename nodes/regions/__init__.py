"""Detailer logic without ComfyUI: choosing regions, cropping, scaling, feathering and pasting back."""
