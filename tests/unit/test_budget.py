"""plan_decode: whole when it fits, the largest tile that fits beside the IMAGE when not, else a refusal with the
figures. ComfyUI's SD VAE estimate (2178 * h * w * 64 bytes per fp32 unit, times 4) makes the numbers real."""
import pytest

from precision_safe.nodes.precision.budget import GIB, DecodeNeed, plan_decode, surely_fits
from precision_safe.nodes.precision.errors import PrecisionError


def sd_vae_need(batch, side, scale=8):
    """A batch of side x side latents for ComfyUI's SD VAE at fp32."""
    pixels = (side * scale) ** 2
    return DecodeNeed(batch, side, side, scale, work=lambda h, w: 2178 * h * w * 64 * 4,
                      image_bytes=batch * 3 * pixels * 4, blend_bytes=pixels * 4)


def test_a_decode_that_fits_runs_whole():
    need = sd_vae_need(4, 128)  # 4 x 1024 px: ~9 GiB per item by ComfyUI's estimate
    plan = plan_decode("SafeVAEDecode #1", need, free_device=16 * GIB, free_host=16 * GIB, shared=True)
    assert not plan.tiled and plan.whole_bytes == 2178 * 128 * 128 * 64 * 4


def test_a_huge_decode_goes_tiled_with_the_largest_tile_that_fits():
    need = sd_vae_need(1, 2048)  # 16384 x 16384 px (issue 11): ~2178 GiB whole, a 3 GiB IMAGE
    plan = plan_decode("SafeVAEDecode #1", need, free_device=16 * GIB, free_host=16 * GIB, shared=True)
    assert plan.tiled and (plan.tile, plan.overlap) == (64, 16)  # a 512 px tile: ~2.1 GiB beside the 4 GiB kept
    assert "decoded tiled (512 px tiles, overlap 128 px): a whole decode of 1 x 16384x16384 px needs ~2178.0 GiB, " \
           "16.0 GiB is free" == plan.note(need)
    smaller = plan_decode("N", need, free_device=5 * GIB, free_host=5 * GIB, shared=True)
    assert smaller.tile == 32  # 4 GiB kept, 1 GiB left: a 48 tile needs ~1.2 GiB, a 32 tile ~0.5 GiB


def test_on_a_gpu_the_image_counts_against_host_memory_only():
    need = sd_vae_need(1, 2048)
    plan = plan_decode("N", need, free_device=3 * GIB, free_host=8 * GIB, shared=False)
    assert plan.tile == 64  # 2.1 GiB per tile on the device; the 4 GiB IMAGE + weights on the host


def test_refused_with_the_figures_and_the_fix_when_not_even_tiles_fit():
    need = sd_vae_need(8, 2048)  # 8 x 16384 px: the IMAGE alone is 24 GiB
    with pytest.raises(PrecisionError) as info:
        plan_decode("SafeVAEDecode #5", need, free_device=16 * GIB, free_host=16 * GIB, shared=True)
    msg = str(info.value)
    assert msg.startswith("[SafeVAEDecode #5, input 'samples'] decoding 8 x 16384x16384 px needs ~2178.0 GiB at once")
    assert "~25.0 GiB for the decoded IMAGE itself" in msg and "only 16.0 GiB of memory is free" in msg
    assert "Fix: decode fewer or smaller latents at a time" in msg


def test_a_small_latent_that_does_not_fit_is_refused_not_tiled_into_one_tile():
    need = sd_vae_need(1, 12)
    with pytest.raises(PrecisionError):
        plan_decode("N", need, free_device=0.01 * GIB, free_host=16 * GIB, shared=False)


def test_only_decodes_near_the_machines_memory_ask_what_is_free():
    need = sd_vae_need(1, 128)  # 1024 px: ~9 GiB of work by ComfyUI's estimate, a 12 MiB IMAGE
    assert surely_fits(need, total_device=141 * GIB, total_host=128 * GIB, shared=False)  # an H200
    assert not surely_fits(need, total_device=16 * GIB, total_host=64 * GIB, shared=False)  # over half of 16 GiB
    # half of 17.02 GiB holds the work alone, not the work and the IMAGE: on a CPU both come out of the same RAM
    assert surely_fits(need, total_device=17.02 * GIB, total_host=128 * GIB, shared=False)
    assert not surely_fits(need, total_device=17.02 * GIB, total_host=17.02 * GIB, shared=True)
    assert not surely_fits(sd_vae_need(1, 2048), total_device=141 * GIB, total_host=128 * GIB, shared=False)
