"""Enforce downstream through ComfyUI's real executor, with the same rewrite the server's on-prompt handler applies
(tests/support/comfy_inproc.py runs it before validating): where errors land, what /history holds, caching, and
what the handler leaves alone."""
import asyncio
import uuid

import torch
from comfy_execution.graph_utils import GraphBuilder

from graphs import policy, txt2img


def _graph(on_mismatch="cast", enforce=True):
    """txt2img -> VAEDecode (VAE through the policy) -> a bf16 IMAGE -> core PreviewImage, titled as in the editor."""
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16)
    p = policy(g, on_mismatch=on_mismatch)
    p.set_input("enforce_downstream", enforce)
    p.set_input("vae", ckpt.out(2))
    dec = g.node("VAEDecode", samples=sampler.out(0), vae=p.out(3))
    half = g.node("PSTest_CastImage", image=dec.out(0), dtype="bf16")
    preview = g.node("PreviewImage", images=half.out(0))
    prompt = g.finalize()
    prompt[preview.id]["_meta"] = {"title": "My Preview"}
    return prompt, p.id, dec.id, half.id, preview.id, sampler.id


def _records(comfy, step, node_id):
    """The records conform step `step`'s (first) output carries for `node_id`: a step files its record under the
    node it conformed for, on the value it hands that node."""
    carried = comfy.pack_module("nodes.host.records").carried(comfy.output(step))
    return [e["record"] for e in carried if e["node_id"] == node_id]


def test_error_mode_blocks_the_users_node_with_the_input_dtypes_and_fix(comfy):
    prompt, pid, _, _, preview, _ = _graph(on_mismatch="error")
    r = comfy.run(prompt)
    assert not r.success
    assert r.error["node_id"] == preview and r.error["node_type"] == "PreviewImage"
    msg = r.error["exception_message"]
    assert msg.startswith(f"Execution Blocked: [My Preview #{preview}, input 'images'] got bf16 but Precision Policy "
                          f"#{pid} (enforce downstream) expects fp32 (what My Preview #{preview} is written for: "
                          "ComfyUI's IMAGE/LATENT dtype)"), msg
    assert f"Fix: set on_mismatch to 'cast' on Precision Policy #{pid}" in msg


def test_cast_mode_runs_core_nodes_as_themselves_on_conformed_inputs_and_records_the_casts(comfy):
    prompt, pid, dec, half, preview, sampler = _graph()
    r = comfy.run(prompt)
    assert r.success, r.error
    sent = comfy.last_prompt
    for nid in (dec, half, preview, sampler):
        assert sent[nid]["class_type"] == prompt[nid]["class_type"]
    assert sent[preview]["inputs"]["images"] == [f"{preview}.precision_safe.images", 0]
    assert sent[sampler]["inputs"] == prompt[sampler]["inputs"]  # not downstream of the policy: as it was
    casts = _records(comfy, f"{preview}.precision_safe.images", preview)
    assert [c for rec in casts for c in rec["casts"]] == ["images: bf16 -> fp32"]
    assert casts[0]["node"] == f"My Preview #{preview}"
    assert casts[0]["context_source"] == f"enforced by Precision Policy #{pid}"
    vae = _records(comfy, f"{dec}.precision_safe.vae", dec)
    assert len(vae) == 1 and vae[0]["notes"][0].startswith("vae: VAE copy"), vae
    assert r.ui(pid)["precision_safe"][0]["notes"][-1] == (
        f"enforce downstream: 4 inputs conformed (My Preview #{preview}: images; PSTest_CastImage #{half}: image; "
        f"VAEDecode #{dec}: samples, vae)")
    assert len(r.outputs[preview]["images"]) == 1  # the preview's ui under its own id


def test_an_unchanged_prompt_runs_again_from_the_cache_and_a_changed_input_reruns(comfy):
    prompt, _, dec, _, preview, sampler = _graph()
    comfy.run(prompt, fresh=True)
    r = comfy.run(prompt)
    cached = set(next(d["nodes"] for e, d in r.messages if e == "execution_cached"))
    assert {dec, sampler, preview, f"{dec}.precision_safe.vae"} <= cached
    prompt[sampler]["inputs"]["seed"] = 1
    r = comfy.run(prompt)
    cached = set(next(d["nodes"] for e, d in r.messages if e == "execution_cached"))
    assert dec not in cached and f"{dec}.precision_safe.samples" not in cached  # the sampled latent changed
    assert f"{dec}.precision_safe.vae" in cached  # the VAE did not: its conformed copy is reused


def test_rewriting_is_idempotent_and_a_policy_without_enforcement_changes_nothing(comfy):
    prompt, *_ = _graph()
    once = comfy.prepare(prompt)
    assert comfy.prepare(once) == once
    plain, *_ = _graph(enforce=False)
    assert comfy.prepare(plain) == plain


def test_an_invalid_prompt_is_left_as_the_user_made_it_so_comfyui_reports_its_own_errors(comfy):
    prompt, _, dec, *_ = _graph()
    latent = next(k for k, n in prompt.items() if n["class_type"] == "EmptyLatentImage")
    prompt[latent]["inputs"]["width"] = 8  # below EmptyLatentImage's minimum
    sent = comfy.prepare(prompt)
    assert sent == prompt
    valid = asyncio.run(comfy.execution.validate_prompt(str(uuid.uuid4()), sent, None))
    assert not valid[0] and latent in valid[3] and valid[3][latent]["class_type"] == "EmptyLatentImage"


def test_governed_nodes_get_the_same_result_as_ungoverned_ones_when_dtypes_agree(comfy):
    def decoded(enforce):
        g = GraphBuilder()
        ckpt, sampler = txt2img(g, size=16)
        p = policy(g)
        p.set_input("enforce_downstream", enforce)
        p.set_input("vae", ckpt.out(2))
        dec = g.node("VAEDecode", samples=sampler.out(0), vae=p.out(3))
        g.node("PreviewImage", images=dec.out(0))
        assert comfy.run(g.finalize()).success
        return comfy.output(dec.id)

    assert torch.equal(decoded(False), decoded(True))


def test_lists_pass_the_conform_steps_item_by_item(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16, batch=2)
    p = policy(g)
    p.set_input("vae", ckpt.out(2))
    dec = g.node("VAEDecode", samples=sampler.out(0), vae=p.out(3))
    half = g.node("PSTest_CastImage", image=dec.out(0), dtype="bf16")
    split = g.node("RebatchImages", images=half.out(0), batch_size=1)  # OUTPUT_IS_LIST: two IMAGEs
    preview = g.node("PreviewImage", images=split.out(0))
    save = g.node("PrecisionSafeSaveImage", images=half.out(0), filename_prefix="precision_safe_tests/enforce_list")
    r = comfy.run(g.finalize(), fresh=True)
    assert r.success, r.error
    assert len(r.outputs[preview.id]["images"]) == 2  # the preview mapped over both items, as stock
    casts = _records(comfy, f"{split.id}.precision_safe.images", split.id)
    assert [c for rec in casts for c in rec["casts"]] == ["images: bf16 -> fp32"]
    # its two items come from RebatchImages already conformed: nothing to cast, no record
    assert _records(comfy, f"{preview.id}.precision_safe.images", preview.id) == []
    assert r.ui(save.id)["precision_safe"][0]["casts"] == ["images: bf16 -> fp32"]  # the pack's own node conforms
