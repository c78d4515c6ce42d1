"""Where the dev host lives (built by `make host`), and making sure the tiny models exist."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMFY_DIR = os.environ.get("COMFYUI_DIR", os.path.join(ROOT, ".host", "ComfyUI"))
CHECKPOINT = "tiny_sd15.safetensors"
OVERFLOW_VAE = "tiny_overflow_vae.safetensors"


def link_testing_nodes():
    """The test-only node pack, next to the real one in the host's custom_nodes/."""
    link = os.path.join(COMFY_DIR, "custom_nodes", "precision_safe_testing")
    target = os.path.join(ROOT, "tests", "support", "testing_nodes")
    if os.path.realpath(link) != target:
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(target, link)


def ensure_models():
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_tiny_models.py"), COMFY_DIR], check=True)
