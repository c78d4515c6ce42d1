"""Enforce downstream through ComfyUI's real executor (the same rewrite the server's on-prompt handler applies)."""
import torch
from comfy_execution.graph_utils import GraphBuilder

from graphs import policy, txt2img


def _bf16_preview(g, enforce=True, **choices):
    ckpt, sampler = txt2img(g, size=16)
    p = policy(g, **choices)
    p.set_input("enforce_downstream", enforce)
    p.set_input("vae", ckpt.out(2))
    dec = g.node("VAEDecode", samples=sampler.out(0), vae=p.out(3))
    half = g.node("PSTest_CastImage", image=dec.out(0), dtype="bf16")
    preview = g.node("PreviewImage", images=half.out(0))
    return p, dec, half, preview


def test_bf16_image_into_core_preview_is_cast_and_recorded(comfy):
    g = GraphBuilder()
    p, dec, half, preview = _bf16_preview(g)
    r = comfy.run(g.finalize())
    assert r.success, r.error
    prompt = comfy.last_prompt
    assert prompt[preview.id]["class_type"] == "PrecisionSafeEnforcedOutput"
    assert prompt[dec.id]["class_type"] == "PrecisionSafeEnforced"
    print(r.outputs.keys(), comfy.executor.history_result["meta"])
