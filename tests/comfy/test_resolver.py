"""The one resolver through the real executor: `auto` is ComfyUI's own choice (a policy that changes nothing costs
nothing), an explicit dtype converts weights once, and Dtype Inspect, the policy table and the records agree."""
import torch
from comfy_execution.graph_utils import GraphBuilder

from graphs import policy, txt2img
from comfy_client import CHECKPOINT


def _policy_on_checkpoint(g, **choices):
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    p = policy(g, **choices)
    p.set_input("model", ckpt.out(0))
    p.set_input("clip", ckpt.out(1))
    p.set_input("vae", ckpt.out(2))
    return ckpt, p


def test_auto_policy_clones_share_everything_with_the_originals(comfy):
    g = GraphBuilder()
    ckpt, p = _policy_on_checkpoint(g)
    g.node("PrecisionSafeDtypeInspect", value=p.out(1), strict=True)
    r = comfy.run(g.finalize())
    assert r.success, r.error
    src, clone = comfy.output(ckpt.id, 0), comfy.output(p.id, 1)
    assert clone is not src and clone.model is src.model
    # ComfyUI re-loads a clone's weights only when its patches_uuid differs from the loaded one's: same uuid, no re-load
    assert clone.patches_uuid == src.patches_uuid
    assert "manual_cast_dtype" not in clone.object_patches and not clone.force_cast_weights
    assert clone.wrappers == src.wrappers  # nothing on the sampling path
    clip, vae = comfy.output(ckpt.id, 1), comfy.output(ckpt.id, 2)
    assert comfy.output(p.id, 2).cond_stage_model is clip.cond_stage_model
    assert comfy.output(p.id, 3).first_stage_model is vae.first_stage_model
    notes = r.ui(p.id)["precision_safe"][0]["notes"]
    assert notes[:3] == ["MODEL clone computes fp32 as ComfyUI chose: shares weights and patches, no cost",
                         "CLIP clone keeps fp16 as ComfyUI chose: no cost",
                         "VAE copy decodes fp32 as ComfyUI chose: same weights, no cost"]
    assert notes[3].startswith("enforce downstream: on")  # on by default; nothing downstream but the pack's Inspect
    text = r.ui(p.id)["text"][0]
    assert "unet: fp32 · cpu (auto: ComfyUI's choice for this MODEL)" in text
    assert "text_encoder: fp16 · cpu (auto: ComfyUI's choice for this CLIP)" in text
    assert "detector: fp32 · cpu (auto: the pack's default on cpu)" in text


def test_explicit_unet_dtype_converts_the_weights_once(comfy):
    g = GraphBuilder()
    ckpt, p = _policy_on_checkpoint(g, unet_dtype="bf16")
    p2 = policy(g, unet_dtype="bf16", on_mismatch="error")  # a second policy node on the same MODEL
    p2.set_input("model", ckpt.out(0))
    _, sampler = txt2img(g, model=p.out(1), clip=ckpt.out(1))
    g.node("PrecisionSafeDtypeInspect", value=sampler.out(0), strict=True)
    g.node("PrecisionSafeDtypeInspect", value=p2.out(1), strict=True)
    r = comfy.run(g.finalize())
    assert r.success, r.error
    src, clone, clone2 = comfy.output(ckpt.id, 0), comfy.output(p.id, 1), comfy.output(p2.id, 1)
    assert clone.model is not src.model and clone2.model is clone.model  # one copy for both nodes
    unet = clone.model.diffusion_model
    assert {t.dtype for t in unet.parameters()} == {torch.bfloat16} and unet.dtype == torch.bfloat16
    assert {t.dtype for t in src.model.diffusion_model.parameters()} == {torch.float32}  # the original is untouched
    assert clone.model.model_sampling.sigmas.dtype == torch.float32  # only the UNet's weights are converted
    assert clone.model.manual_cast_dtype is None and "manual_cast_dtype" not in clone.object_patches
    assert clone.model_options["precision_safe_context"].unet == "bf16"
    assert torch.isfinite(comfy.output(sampler.id)["samples"]).all()
    notes = r.ui(p.id)["precision_safe"][0]["notes"]
    assert notes[0].startswith("MODEL weights converted once to bf16 (") and "MiB copy" in notes[0]
    assert "unet: bf16 · cpu (set to bf16; ComfyUI chose fp32 for this MODEL)" in r.ui(p.id)["text"][0]
    # one copy per source model and dtype: at most one of the two nodes made it (none if an earlier run did)
    states = [n[0].split("; ")[-1] for n in (notes, r.ui(p2.id)["precision_safe"][0]["notes"])]
    assert states.count("reused): no per-step cast") >= 1 and states.count("made now): no per-step cast") <= 1


def test_text_encoder_role_is_applied_and_checked(comfy):
    g = GraphBuilder()
    ckpt, p = _policy_on_checkpoint(g, text_encoder_dtype="bf16")
    raw = g.node("PrecisionSafeDtypeInspect", value=ckpt.out(1), context=p.out(0))
    held = g.node("PrecisionSafeDtypeInspect", value=p.out(2), strict=True)
    enc = g.node("CLIPTextEncode", text="a red square", clip=p.out(2))
    ref = g.node("CLIPTextEncode", text="a red square", clip=ckpt.out(1))
    for cond in (enc, ref):
        g.node("PrecisionSafeDtypeInspect", value=cond.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    assert "MISMATCH clip is fp16 but the context expects bf16 for role 'text_encoder'" in r.ui(raw.id)["text"][0]
    assert "agrees with the context" in r.ui(held.id)["text"][0]
    held_at = {n: t.dtype for n, t in comfy.output(p.id, 2).cond_stage_model.named_parameters()}
    loaded_at = {n: t.dtype for n, t in comfy.output(ckpt.id, 1).cond_stage_model.named_parameters()}
    assert held_at == {n: torch.bfloat16 if d == torch.float16 else d for n, d in loaded_at.items()}
    assert loaded_at["clip_l.logit_scale"] == torch.float32 and torch.float16 in loaded_at.values()
    a, b = comfy.output(enc.id)[0][0], comfy.output(ref.id)[0][0]
    assert torch.isfinite(a).all() and a.shape == b.shape
    torch.testing.assert_close(a, b, atol=0.1, rtol=0.05)  # the same encoder, held at bf16 instead of fp16


def test_strict_inspect_passes_on_a_default_graph(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    decode = g.node("VAEDecode", samples=sampler.out(0), vae=ckpt.out(2))
    for value in (ckpt.out(0), ckpt.out(1), ckpt.out(2), sampler.out(0), decode.out(0)):
        g.node("PrecisionSafeDtypeInspect", value=value, strict=True)
    r = comfy.run(g.finalize())
    assert r.success, r.error
