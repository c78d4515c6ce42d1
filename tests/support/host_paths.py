"""Where the dev host lives (built by `make host`), and making sure the tiny models exist."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMFY_DIR = os.environ.get("COMFYUI_DIR", os.path.join(ROOT, ".host", "ComfyUI"))
CHECKPOINT = "tiny_sd15.safetensors"
OVERFLOW_VAE = "tiny_overflow_vae.safetensors"


def ensure_models():
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_tiny_models.py"), COMFY_DIR], check=True)
