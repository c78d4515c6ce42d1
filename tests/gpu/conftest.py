"""GPU tier: real CUDA runs of the pack's host functions (no ComfyUI executor, so no comfy_api / av / pydantic).

Everything here is marked `gpu` and skipped when torch sees no CUDA device (CI and the CPU dev host). ComfyUI is
imported lazily, inside fixtures, so collecting this folder on a CPU machine imports nothing from it.

Where ComfyUI lives: $COMFYUI_DIR, else the dev host's .host/ComfyUI. scripts/bench/gpu_run.sh sets it up on the GPU
machine (carried tree, carried pure-Python packages, tiny models regenerated there).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COMFY_DIR = os.environ.get("COMFYUI_DIR", str(ROOT / ".host" / "ComfyUI"))
CHECKPOINT = "tiny_sd15.safetensors"
OVERFLOW_VAE = "tiny_overflow_vae.safetensors"
TAESD = "tiny_taesd.safetensors"
ASSETS = ROOT / "tests" / "assets" / "models"
HAVE_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs CUDA (GPU tier)")
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
            if not HAVE_CUDA:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def cuda():
    if not HAVE_CUDA:
        pytest.skip("needs CUDA")
    return torch.device("cuda")


@pytest.fixture(scope="session")
def comfy_dir(cuda):
    """ComfyUI's tree on sys.path, with the tiny models made (once) in its models/ folder."""
    if not os.path.isfile(os.path.join(COMFY_DIR, "comfy", "sd.py")):
        pytest.skip(f"no ComfyUI tree at {COMFY_DIR} (set COMFYUI_DIR)")
    if COMFY_DIR not in sys.path:
        sys.path.insert(0, COMFY_DIR)
    models = [os.path.join(COMFY_DIR, "models", "checkpoints", CHECKPOINT)] + [
        os.path.join(COMFY_DIR, "models", "vae", name) for name in (OVERFLOW_VAE, TAESD)]
    if not all(os.path.exists(path) for path in models):
        subprocess.run([sys.executable, str(ROOT / "scripts" / "fixtures" / "make_tiny_models.py"), COMFY_DIR],
                       check=True)
    return COMFY_DIR


@pytest.fixture(scope="session")
def checkpoint(comfy_dir):
    """(MODEL, CLIP, VAE) of the tiny SD1.5-shaped checkpoint, loaded by ComfyUI on the GPU."""
    import comfy.sd
    path = os.path.join(comfy_dir, "models", "checkpoints", CHECKPOINT)
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)
    return model, clip, vae


@pytest.fixture(scope="session")
def overflow_vae(comfy_dir):
    """The full-size SD VAE with post_quant_conv.weight x 1e5: latents of magnitude ~100 overflow in fp16."""
    import comfy.sd
    import comfy.utils
    path = os.path.join(comfy_dir, "models", "vae", OVERFLOW_VAE)
    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(path))


@pytest.fixture(scope="session")
def taesd(comfy_dir):
    """ComfyUI's TAESD with random weights: fast tiles, decode memory estimated like the SD VAE's."""
    import comfy.sd
    import comfy.utils
    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(os.path.join(comfy_dir, "models", "vae", TAESD)))


@pytest.fixture(scope="session")
def overflow_batch():
    """[zeros, randn*100] at 16x16: item 0 stays in fp16's range through the overflow VAE, item 1 does not."""
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.zeros(1, 4, 16, 16), torch.randn(1, 4, 16, 16, generator=g) * 100])


@pytest.fixture(autouse=True)
def inference_mode():
    """Each test runs as ComfyUI's executor runs a node: under torch.inference_mode()."""
    with torch.inference_mode():
        yield
