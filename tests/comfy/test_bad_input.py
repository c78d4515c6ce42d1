"""Bad input reaches SafeVAEDecode: a clear error on that node (never a traceback from deep in torch)."""
import pytest
from comfy_execution.graph_utils import GraphBuilder

from graphs import txt2img


def _decode(comfy, make_latent):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16, batch=2)
    bad = make_latent(g, sampler)
    safe = g.node("PrecisionSafeVAEDecode", samples=bad.out(0), vae=ckpt.out(2))
    g.node("PreviewImage", images=safe.out(0))
    r = comfy.run(g.finalize())
    assert not r.success
    assert r.error["node_id"] == safe.id
    assert r.error["exception_type"].endswith("PrecisionError")
    return r.error["exception_message"]


def test_nonfinite_latent_is_blamed_on_the_sampler_upstream(comfy):
    msg = _decode(comfy, lambda g, s: g.node("PSTest_PoisonLatent", samples=s.out(0), items="1"))
    assert "already non-finite" in msg and "items [1]" in msg and "sampler upstream" in msg


def test_wrong_channel_count(comfy):
    msg = _decode(comfy, lambda g, s: g.node("PSTest_ReshapeLatent", samples=s.out(0), channels=16, batch=-1))
    assert "16 channels but this VAE expects 4" in msg


def test_empty_batch(comfy):
    msg = _decode(comfy, lambda g, s: g.node("PSTest_ReshapeLatent", samples=s.out(0), channels=4, batch=0))
    assert "batch is empty" in msg


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_image_into_inspect_is_reported_not_crashing(comfy, dtype):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    img = g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2))
    half = g.node("PSTest_CastImage", image=img.out(0), dtype=dtype)
    insp = g.node("PrecisionSafeDtypeInspect", value=half.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    info = r.ui(insp.id)["precision_safe"][0]["inspect"][0]
    assert info["dtype"] == dtype and info["nan"] == 0 and 0 <= info["min"] <= info["max"] <= 1
