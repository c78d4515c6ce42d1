"""PrecisionGuard through the real executor: a dtype mismatch inside core KSampler / VAEDecode is re-raised as the
pack's explained error on that core node; the guard changes nothing else, and nothing outside its clones."""
import pytest
import torch
from comfy_execution.graph_utils import GraphBuilder

from graphs import policy, txt2img


def _guard(g, **inputs):
    return g.node("PrecisionSafeGuard", **inputs)


def _assert_explained(r, node, guard, *parts):
    assert not r.success
    assert r.error["node_id"] == node.id, r.error
    assert r.error["exception_type"].endswith("DtypeMismatchError"), r.error["exception_type"]
    msg = r.error["exception_message"]
    assert f"#{node.id} (guarded by Precision Guard #{guard.id})" in msg, msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


def _guarded_half_weight_decode(g, decode_class):
    """txt2img whose VAE has bf16 weights (declaring fp32) behind a Guard, decoded by `decode_class`: (guard, dec)."""
    ckpt, sampler = txt2img(g, size=16)
    bad = g.node("PSTest_HalfWeightsVAE", vae=ckpt.out(2), dtype="bf16")
    guard = _guard(g, vae=bad.out(0))
    dec = g.node(decode_class, samples=sampler.out(0), vae=guard.out(1))
    g.node("PreviewImage", images=dec.out(0))
    return guard, dec


def test_half_weight_vae_in_core_vaedecode_is_explained_on_vaedecode(comfy):
    g = GraphBuilder()
    guard, dec = _guarded_half_weight_decode(g, "VAEDecode")
    r = comfy.run(g.finalize())
    msg = _assert_explained(r, dec, guard, "VAEDecode #", "vae.post_quant_conv", "weights bf16", "declares fp32",
                            "vae_dtype bf16", "Fix:", "torch: Input type (float) and bias type (c10::BFloat16)")
    assert "Traceback" not in msg


def test_a_pack_node_running_a_guarded_vae_is_named_by_its_display_name(comfy):
    g = GraphBuilder()
    guard, dec = _guarded_half_weight_decode(g, "PrecisionSafeVAEDecode")
    r = comfy.run(g.finalize(), fresh=True)  # the guard runs in this prompt, so it knows the nodes' classes
    _assert_explained(r, dec, guard, f"Safe VAE Decode #{dec.id} (guarded by", "vae.post_quant_conv", "weights bf16")


def test_half_weight_model_in_core_ksampler_is_explained_on_ksampler(comfy):
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="tiny_sd15.safetensors")
    bad = g.node("PSTest_HalfWeightsModel", model=ckpt.out(0), dtype="bf16")
    guard = _guard(g, model=bad.out(0))
    _, sampler = txt2img(g, size=16, model=guard.out(0))
    g.node("PreviewImage", images=g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2)).out(0))
    r = comfy.run(g.finalize())
    _assert_explained(r, sampler, guard, "KSampler #", "unet.", "weights bf16", "declares fp32", "unet_dtype bf16",
                      "torch: mat1 and mat2 must have the same dtype")


def test_stock_error_unchanged_without_the_guard_even_after_guarding_a_copy(comfy):
    """The guard's copy carries the translation; the VAE it was made from still raises core's raw error."""
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    bad = g.node("PSTest_HalfWeightsVAE", vae=ckpt.out(2), dtype="bf16")
    guard = _guard(g, vae=bad.out(0))
    g.node("PrecisionSafeDtypeInspect", value=guard.out(1))
    dec = g.node("VAEDecode", samples=sampler.out(0), vae=bad.out(0))
    g.node("PreviewImage", images=dec.out(0))
    r = comfy.run(g.finalize())
    assert not r.success and r.error["node_id"] == dec.id
    assert r.error["exception_type"] == "RuntimeError"
    assert r.error["exception_message"].startswith("Input type (float) and bias type (c10::BFloat16)")
    original, guarded = comfy.output(bad.id), comfy.output(guard.id, 1)
    assert type(original).__name__ == "VAE" and "precision_safe_guard" not in vars(original)
    assert isinstance(guarded, type(original)) and guarded.first_stage_model is original.first_stage_model


def test_guard_is_free_and_siblings_keep_the_originals(comfy):
    """Nothing fails: guarded and unguarded branches give identical tensors; the originals carry no guard."""
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    guard = _guard(g, model=ckpt.out(0), vae=ckpt.out(2))
    _, guarded_sampler = txt2img(g, size=16, model=guard.out(0))
    plain = g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2))
    guarded = g.node("VAEDecode", samples=guarded_sampler.out(0), vae=guard.out(1))
    enc = g.node("VAEEncode", pixels=plain.out(0), vae=guard.out(1))
    for n in (plain, guarded):
        g.node("PreviewImage", images=n.out(0))
    g.node("PrecisionSafeDtypeInspect", value=enc.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    assert torch.equal(comfy.output(sampler.id)["samples"], comfy.output(guarded_sampler.id)["samples"])
    assert torch.equal(comfy.output(plain.id), comfy.output(guarded.id))
    model, vae = comfy.output(ckpt.id, 0), comfy.output(ckpt.id, 2)
    assert not model.wrappers.get("outer_sample", {}).get("precision_safe_guard")
    assert comfy.output(guard.id, 0).wrappers["outer_sample"]["precision_safe_guard"]
    assert type(vae).__name__ == "VAE" and "precision_safe_guard" not in vars(vae)
    rec = r.ui(guard.id)["precision_safe"][0]
    assert rec["notes"] == ["MODEL clone: sampling wrapped (ComfyUI OUTER_SAMPLE wrapper)",
                            "VAE copy: decode/encode wrapped"]


def test_other_errors_pass_through_untouched(comfy):
    """Only dtype and shape mismatches are translated: core's own error on an empty latent batch stays as it is."""
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    empty = g.node("PSTest_ReshapeLatent", samples=sampler.out(0), channels=4, batch=0)
    guard = _guard(g, vae=ckpt.out(2))
    dec = g.node("VAEDecode", samples=empty.out(0), vae=guard.out(1))
    g.node("PreviewImage", images=dec.out(0))
    r = comfy.run(g.finalize())
    assert not r.success and r.error["node_id"] == dec.id
    assert r.error["exception_type"] == "AttributeError", r.error


def test_fallback_for_cores_without_sampling_wrappers(comfy, monkeypatch):
    """Older cores: the guard chains a model_function_wrapper instead; the error is explained the same way."""
    guard_mod = comfy.pack_module("nodes.host.dtype_guard")
    monkeypatch.setattr(guard_mod, "_has_wrapper_api", lambda patcher: False)
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="tiny_sd15.safetensors")
    bad = g.node("PSTest_HalfWeightsModel", model=ckpt.out(0), dtype="bf16")
    guard = _guard(g, model=bad.out(0), context=policy(g, on_nonfinite="keep", enforce_downstream=False).out(0))  # not the cached guard
    _, sampler = txt2img(g, size=16, model=guard.out(0))
    g.node("PreviewImage", images=g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2)).out(0))
    r = comfy.run(g.finalize())
    _assert_explained(r, sampler, guard, "unet.", "weights bf16", "unet_dtype bf16")
    guarded = comfy.output(guard.id, 0)
    wrapper = guarded.model_options["model_function_wrapper"]
    assert not any(isinstance(v, torch.nn.Module) or hasattr(v, "model") for v in vars(wrapper).values())
    assert guarded.clone().model_options["model_function_wrapper"].info is wrapper.info  # clones copy no model


@pytest.mark.parametrize("kind", ["model", "vae"])
def test_the_suggested_fix_works(comfy, kind):
    """What the error says to do (PrecisionPolicy at the weights' dtype) makes the same graph succeed."""
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="tiny_sd15.safetensors")
    model, vae = ckpt.out(0), ckpt.out(2)
    p = policy(g, unet_dtype="bf16", vae_dtype="bf16")
    if kind == "model":
        p.set_input("model", g.node("PSTest_HalfWeightsModel", model=model, dtype="bf16").out(0))
        model = p.out(1)
    else:
        p.set_input("vae", g.node("PSTest_HalfWeightsVAE", vae=vae, dtype="bf16").out(0))
        vae = p.out(3)
    guard = _guard(g, model=model, vae=vae, context=p.out(0))
    _, sampler = txt2img(g, size=16, model=guard.out(0))
    dec = g.node("VAEDecode", samples=sampler.out(0), vae=guard.out(1))
    g.node("PreviewImage", images=dec.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    assert torch.isfinite(comfy.output(dec.id)).all()
    assert r.ui(guard.id)["precision_safe"][0]["context_source"] == "context input"


def test_nothing_connected_warns(comfy):
    g = GraphBuilder()
    guard = _guard(g)
    g.node("PrecisionSafeDtypeInspect", value=guard.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    assert r.ui(guard.id)["precision_safe"][0]["warnings"] == ["nothing connected: connect a MODEL and/or a VAE"]
