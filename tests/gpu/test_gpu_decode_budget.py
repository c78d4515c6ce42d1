"""Safe VAE Decode's memory check on CUDA: a decode ComfyUI estimates above what the GPU can free goes tiled on the
GPU (the IMAGE is assembled in host memory), and comes out whole and finite."""
import math

import pytest
import torch

from precision_safe.nodes.precision.report import PrecisionRecord

pytestmark = pytest.mark.gpu


def test_a_decode_bigger_than_the_gpu_goes_tiled_on_the_gpu(taesd):
    from precision_safe.nodes.host.vae_decode import _free_bytes, decode_once
    vae = taesd
    assert torch.device(vae.device).type == "cuda"
    per_pixel = vae.memory_used_decode((1, 4, 1, 1), vae.vae_dtype)
    side = math.ceil(math.sqrt(1.5 * _free_bytes(torch.device(vae.device)) / per_pixel))
    if side > 2048:
        pytest.skip("this GPU has more memory than a 16384 px decode needs")
    record = PrecisionRecord("Safe VAE Decode #gpu")
    latent = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
    out = decode_once(vae, latent, record)
    assert record.notes and record.notes[0].startswith("decoded tiled (512 px tiles"), record.notes
    assert out.shape == (1, side * 8, side * 8, 3) and out.device.type == "cpu"
    assert torch.isfinite(out).all() and out.std() > 0
