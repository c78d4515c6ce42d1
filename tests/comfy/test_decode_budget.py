"""Safe VAE Decode checks a decode against the free memory before it starts (issue 11: a 16384 px decode took
11.7 GB and 9+ minutes on a CPU and ignored /interrupt): tiled when it cannot fit whole, with an interrupt check
before every tile; refused with the figures when not even that fits. Tile blending is checked against whole decodes."""
import math

import psutil
import pytest
import torch
from comfy_execution.graph_utils import GraphBuilder

from comfy_client import TAESD


@pytest.fixture(scope="module")
def vae_decode(comfy):
    return comfy.pack_module("nodes.host.vae_decode")


@pytest.fixture(scope="module")
def taesd(comfy):
    import nodes
    return nodes.VAELoader().load_vae(TAESD)[0]


def huge_side(vae):
    """A latent side whose whole decode ComfyUI estimates at twice the memory free now."""
    per_pixel = vae.memory_used_decode((1, 4, 1, 1), vae.vae_dtype)
    side = math.ceil(math.sqrt(2 * psutil.virtual_memory().available / per_pixel))
    if side > 2048:
        pytest.skip("this machine has more memory than a 16384 px decode needs")
    return side


@pytest.mark.parametrize("tile, overlap", [(8, 2), (16, 4), (7, 3)])
def test_tiles_blend_to_the_whole_decode_exactly_for_a_pointwise_vae(vae_decode, tile, overlap):
    """ComfyUI's pixel-space 'VAE' decodes each pixel by itself: any tiling must give the whole decode back."""
    import comfy.sd
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    latent = torch.rand(2, 3, 23, 37) * 2 - 1
    whole = vae.decode(latent)
    tiled = vae_decode.decode_tiles(vae, latent, tile, overlap)
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


def test_tiles_of_taesd_are_close_to_its_whole_decode(vae_decode, taesd):
    latent = torch.randn(1, 4, 24, 24, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        whole = taesd.decode(latent)
        tiled = vae_decode.decode_tiles(taesd, latent, 16, 4)
    assert tiled.shape == whole.shape == (1, 192, 192, 3)
    # seams only (a tile sees less context at its edges): far below how much the image itself varies
    assert (tiled - whole).abs().mean() < 0.05 * whole.std()


def test_a_decode_too_big_for_memory_goes_tiled_and_stops_on_interrupt(comfy, vae_decode, taesd):
    import comfy.model_management as mm
    report = comfy.pack_module("nodes.precision.report")
    side = huge_side(taesd)
    record = report.PrecisionRecord("Safe VAE Decode #t")
    mm.interrupt_current_processing(True)  # as POST /interrupt does; the first tile must see it
    try:
        with pytest.raises(mm.InterruptProcessingException):
            vae_decode.decode_once(taesd, torch.zeros(1, 4, side, side), record)
    finally:
        mm.interrupt_current_processing(False)
    assert record.notes == [f"decoded tiled (512 px tiles, overlap 128 px): a whole decode of 1 x {side * 8}x"
                            f"{side * 8} px needs ~{record.notes[0].split('needs ~')[1]}"]


def test_a_decode_that_cannot_fit_even_tiled_is_refused_with_the_figures(comfy):
    image = 3 * 16384 * 16384 * 4
    batch = math.ceil(2 * psutil.virtual_memory().available / image)
    g = GraphBuilder()
    latent = g.node("PSTest_HugeLatent", width=16384, height=16384, batch=batch)
    safe = g.node("PrecisionSafeVAEDecode", samples=latent.out(0), vae=g.node("VAELoader", vae_name=TAESD).out(0))
    g.node("PreviewImage", images=safe.out(0))
    r = comfy.run(g.finalize())
    assert not r.success and r.error["node_id"] == safe.id, r.error
    msg = r.error["exception_message"]
    assert msg.startswith(f"[Safe VAE Decode #{safe.id}, input 'samples'] decoding {batch} x 16384x16384 px needs ~")
    assert "for the decoded IMAGE itself" in msg and "of memory is free" in msg
    assert "Fix: decode fewer or smaller latents at a time" in msg
