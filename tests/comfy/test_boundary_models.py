"""UPSCALE_MODEL, CONTROL_NET and CLIP_VISION through PrecisionPolicy and PrecisionGuard: copies that run at the
context's dtype with casts at their boundary, the originals unchanged (tiny models made on the spot)."""
import json

import torch
from comfy_execution.graph_utils import GraphBuilder

from graphs import policy

UPSCALER = "tiny_compact_x2.safetensors"
CONTROLNET = "tiny_controlnet.safetensors"


def _image(g, dtype="fp32"):
    img = g.node("EmptyImage", width=8, height=8, batch_size=1, color=0x336699)
    return g.node("PSTest_CastImage", image=img.out(0), dtype=dtype)


def test_upscale_model_copies_from_policy_and_guard_leave_the_loaders_model_as_it_was(comfy):
    g = GraphBuilder()
    loader = g.node("UpscaleModelLoader", model_name=UPSCALER)
    p = policy(g, intermediate_dtype="bf16")
    p.set_input("upscale_model", loader.out(0))
    guard = g.node("PrecisionSafeGuard", upscale_model=loader.out(0))
    half = _image(g, "fp16")
    ups = {name: g.node("ImageUpscaleWithModel", upscale_model=model, image=half.out(0))
           for name, model in (("policy", p.out(4)), ("guard", guard.out(2)))}
    for n in ups.values():
        g.node("PreviewImage", images=n.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    original, at_bf16, guarded = comfy.output(loader.id), comfy.output(p.id, 4), comfy.output(guard.id, 2)
    assert original.dtype == torch.float32 and "forward" not in original.model.__dict__
    assert at_bf16.dtype == torch.bfloat16 and guarded.dtype == torch.float32  # guard: auto keeps its weights
    for name, n in ups.items():  # an fp16 IMAGE in (stock: "Input type (c10::Half) and bias type (float)"): finite
        out = comfy.output(n.id)  # ComfyUI's tiled_scale gathers the tiles into an fp32 buffer
        assert out.shape == (1, 16, 16, 3) and torch.isfinite(out).all(), name
    assert any("UPSCALE_MODEL copy: weights converted once to bf16" in note
               for note in r.ui(p.id)["precision_safe"][0]["notes"])


def test_control_net_copy_at_bf16_from_the_policy_leaves_the_loaded_one_at_fp32(comfy):
    g = GraphBuilder()
    loader = g.node("ControlNetLoader", control_net_name=CONTROLNET)
    p = policy(g, unet_dtype="bf16")
    p.set_input("control_net", loader.out(0))
    g.node("PrecisionSafeDtypeInspect", value=p.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    original, copy = comfy.output(loader.id), comfy.output(p.id, 5)
    assert next(original.control_model.parameters()).dtype == torch.float32
    assert next(copy.control_model.parameters()).dtype == torch.bfloat16
    assert copy.control_model_wrapped.model is copy.control_model and original.control_model_wrapped.model is not \
        copy.control_model


def test_clip_vision_copy_encodes_at_the_text_encoder_dtype_with_the_original_unchanged(comfy, tmp_path):
    from comfy.clip_vision import ClipVisionModel
    config = {"hidden_act": "quick_gelu", "hidden_size": 32, "image_size": 28, "intermediate_size": 64,
              "layer_norm_eps": 1e-05, "model_type": "clip_vision_model", "num_attention_heads": 2, "num_channels": 3,
              "num_hidden_layers": 2, "patch_size": 14, "projection_dim": 16}
    path = tmp_path / "tiny_clip_vision.json"
    path.write_text(json.dumps(config))
    cv = ClipVisionModel(str(path))
    torch.manual_seed(0)
    with torch.no_grad():
        for t in cv.model.parameters():
            t.normal_(0, 0.02)
    stored = next(cv.model.parameters()).dtype  # ComfyUI's text-encoder storage dtype (fp16 on a CPU)
    boundary = comfy.pack_module("nodes.host.boundary_copies")
    ctx = comfy.pack_module("nodes.precision.context").PrecisionContext(text_encoder="bf16")
    copy, note = boundary.clip_vision_with_policy(cv, ctx)
    image = torch.rand(1, 28, 28, 3)
    out = copy.encode_image(image)
    assert out["image_embeds"].dtype == torch.float32 and torch.isfinite(out["image_embeds"]).all()
    assert next(copy.model.parameters()).dtype == torch.bfloat16 and copy.dtype == torch.bfloat16
    assert next(cv.model.parameters()).dtype == stored and "forward" not in cv.model.__dict__
    assert "weights converted once to bf16" in note
    torch.testing.assert_close(out["image_embeds"], cv.encode_image(image)["image_embeds"], atol=0.05, rtol=0.05)
