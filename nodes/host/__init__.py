"""Adapters between the pure precision logic and ComfyUI's MODEL / CLIP / VAE objects."""
