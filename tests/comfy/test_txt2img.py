"""txt2img through ComfyUI's real executor with the tiny checkpoint, decoded by SafeVAEDecode."""
import torch
from comfy_execution.graph_utils import GraphBuilder

from graphs import txt2img


def _finite_nonblack(img):
    assert torch.isfinite(img).all()
    assert img.float().std() > 0.01, "image is flat (black)"


def test_txt2img_safe_decode_matches_core(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g)
    safe = g.node("PrecisionSafeVAEDecode", samples=sampler.out(0), vae=ckpt.out(2))
    core = g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2))
    a = g.node("PrecisionSafeDtypeInspect", value=safe.out(0))
    b = g.node("PrecisionSafeDtypeInspect", value=core.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    rec = r.ui(safe.id)["precision_safe"][0]
    assert rec["ran"]["vae"] == "fp32 · cpu"
    assert rec["retries"] == [] and rec["casts"] == []
    assert "fp32 cpu (1, 64, 64, 3)" in r.ui(a.id)["text"][0]
    assert r.ui(a.id)["text"][0].split("\n")[0] == r.ui(b.id)["text"][0].split("\n")[0]
    img, ref = comfy.output(safe.id), comfy.output(core.id)
    _finite_nonblack(img)
    torch.testing.assert_close(img, ref)  # a healthy decode: same result as core
