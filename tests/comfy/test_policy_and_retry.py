"""PrecisionPolicy clones vs originals, per-item retry, cast vs error mode: all through the real executor."""
import torch
from comfy_execution.graph_utils import GraphBuilder

from graphs import overflow_batch, overflow_vae, policy, txt2img


def test_policy_clones_leave_the_originals_alone(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g)
    p = policy(g, unet_dtype="bf16", vae_dtype="bf16")
    p.set_input("model", ckpt.out(0))
    p.set_input("vae", ckpt.out(2))
    p.set_input("clip", ckpt.out(1))
    clone_vae = g.node("PrecisionSafeDtypeInspect", value=p.out(3))
    clone_clip = g.node("PrecisionSafeDtypeInspect", value=p.out(2))
    orig_vae = g.node("PrecisionSafeDtypeInspect", value=ckpt.out(2))
    clone_model = g.node("PrecisionSafeDtypeInspect", value=p.out(1))
    orig_model = g.node("PrecisionSafeDtypeInspect", value=ckpt.out(0))
    # a sibling branch decodes with the original VAE while another uses the clone
    sib = g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2))
    via_clone = g.node("VAEDecode", samples=sampler.out(0), vae=p.out(3))
    g.node("PrecisionSafeDtypeInspect", value=sib.out(0))
    g.node("PrecisionSafeDtypeInspect", value=via_clone.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    assert "VAE vae: storage bf16 compute bf16" in r.ui(clone_vae.id)["text"][0]
    assert "VAE vae: storage fp32 compute fp32" in r.ui(orig_vae.id)["text"][0]
    assert "compute bf16" in r.ui(clone_model.id)["text"][0]
    assert "compute fp32" in r.ui(orig_model.id)["text"][0]
    # the clone's context is found without an explicit edge
    assert "context: attached to VAE" in r.ui(clone_vae.id)["text"][0]
    assert "context: attached to MODEL" in r.ui(clone_model.id)["text"][0]
    assert "context: attached to CLIP" in r.ui(clone_clip.id)["text"][0]
    assert "context: default (auto)" in r.ui(orig_vae.id)["text"][0]
    original = comfy.output(ckpt.id, 2)
    assert original.vae_dtype == torch.float32
    assert next(original.first_stage_model.parameters()).dtype == torch.float32
    assert comfy.output(p.id, 3).vae_dtype == torch.bfloat16
    a, b = comfy.output(sib.id), comfy.output(via_clone.id)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert not torch.equal(a, b)  # the bf16 copy really decoded in bf16 ...
    torch.testing.assert_close(a, b, atol=0.05, rtol=0)  # ... and agrees with fp32 to bf16 precision


def test_only_overflowing_items_are_retried_in_a_wider_dtype(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    batch = overflow_batch(g, sampler)
    p = policy(g, vae_dtype="fp16")
    p.set_input("vae", overflow_vae(g).out(0))
    safe = g.node("PrecisionSafeVAEDecode", samples=batch.out(0), vae=p.out(3))
    core = g.node("VAEDecode", samples=batch.out(0), vae=p.out(3))
    g.node("PreviewImage", images=safe.out(0))
    g.node("PreviewImage", images=core.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    rec = r.ui(safe.id)["precision_safe"][0]
    assert rec["ran"]["vae"] == "fp16 · cpu"
    assert rec["retries"] == ["items [1] fp16 -> bf16: finite"]
    assert rec["context_source"] == "attached to VAE"
    safe_img, core_img = comfy.output(safe.id), comfy.output(core.id)
    assert torch.isfinite(safe_img).all() and safe_img[1].std() > 0.01
    assert torch.isfinite(core_img[0]).all() and not torch.isfinite(core_img[1]).all()  # core: black image
    assert torch.equal(safe_img[0], core_img[0])  # the healthy item was not decoded again


def test_half_latent_is_cast_and_recorded(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    half = g.node("PSTest_CastLatent", samples=sampler.out(0), dtype="bf16")
    safe = g.node("PrecisionSafeVAEDecode", samples=half.out(0), vae=ckpt.out(2))
    g.node("PreviewImage", images=safe.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    assert r.ui(safe.id)["precision_safe"][0]["casts"] == ["samples: bf16 -> fp32"]
    assert comfy.output(safe.id).dtype == torch.float32


def test_error_mode_stops_on_the_node_with_input_dtypes_and_fix(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    half = g.node("PSTest_CastLatent", samples=sampler.out(0), dtype="fp16")
    p = policy(g, on_mismatch="error")
    safe = g.node("PrecisionSafeVAEDecode", samples=half.out(0), vae=ckpt.out(2), context=p.out(0))
    g.node("PreviewImage", images=safe.out(0))
    r = comfy.run(g.finalize())
    assert not r.success
    assert r.error["node_id"] == safe.id
    msg = r.error["exception_message"]
    assert f"Safe VAE Decode #{safe.id}" in msg and "'samples'" in msg
    assert "got fp16" in msg and "expects fp32" in msg and "Fix:" in msg


def test_strict_inspect_raises_and_lenient_reports(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    img = g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2))
    half = g.node("PSTest_CastImage", image=img.out(0), dtype="bf16")
    lenient = g.node("PrecisionSafeDtypeInspect", value=half.out(0))
    r = comfy.run(g.finalize())
    assert r.success
    text = r.ui(lenient.id)["text"][0]
    assert "IMAGE image: bf16 cpu (1, 16, 16, 3)" in text
    assert "MISMATCH image is bf16 but the context expects fp32 for role 'intermediate'" in text
    assert torch.equal(comfy.output(lenient.id), comfy.output(half.id))  # passed through unchanged
    strict = g.node("PrecisionSafeDtypeInspect", value=half.out(0), strict=True)
    r = comfy.run(g.finalize())
    assert not r.success and r.error["node_id"] == strict.id
    assert "image is bf16 but the context expects fp32" in r.error["exception_message"]


def test_original_model_reads_its_own_dtype_while_a_policy_clone_is_loaded(comfy):
    # run 1 leaves the bf16 clone loaded: its object patches sit on the shared model until something unloads it
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="tiny_sd15.safetensors")
    p = policy(g, unet_dtype="bf16")
    p.set_input("model", ckpt.out(0))
    _, sampler = txt2img(g, size=16, model=p.out(1))
    g.node("PrecisionSafeDtypeInspect", value=sampler.out(0))
    assert comfy.run(g.finalize()).success
    g2 = GraphBuilder()
    ckpt2 = g2.node("CheckpointLoaderSimple", ckpt_name="tiny_sd15.safetensors")
    orig = g2.node("PrecisionSafeDtypeInspect", value=ckpt2.out(0))
    r = comfy.run(g2.finalize())
    assert "MODEL model: storage fp32 compute fp32" in r.ui(orig.id)["text"][0]
