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


def _prompt_id(r):
    return next(d["prompt_id"] for e, d in r.messages if e == "execution_start")


def test_error_from_an_inserted_step_lands_on_the_original_node_with_input_dtypes_and_fix(comfy):
    prompt, pid, _, _, preview, _ = _graph(on_mismatch="error")
    r = comfy.run(prompt)
    assert not r.success
    assert r.error["node_id"] == preview  # the id the editor highlights, not the inserted step's
    msg = r.error["exception_message"]
    assert msg.startswith(f"[My Preview #{preview}, input 'images'] got bf16 but PrecisionPolicy #{pid} (enforce "
                          "downstream) expects fp32 for role 'intermediate'"), msg
    assert f"Fix: set on_mismatch to 'cast' on PrecisionPolicy #{pid}" in msg


def test_cast_mode_runs_core_nodes_on_conformed_inputs_and_records_the_casts(comfy):
    prompt, pid, dec, half, preview, sampler = _graph()
    r = comfy.run(prompt)
    assert r.success, r.error
    sent = comfy.last_prompt
    assert {sent[n]["class_type"] for n in (dec, preview)} == {"PrecisionSafeEnforced", "PrecisionSafeEnforcedOutput"}
    assert sent[sampler]["class_type"] == "KSampler"  # not downstream of the policy: as it was
    records = comfy.pack_module("nodes.host.run_records").registered(_prompt_id(r))
    assert [c for rec in records[preview] for c in rec["casts"]] == ["images: bf16 -> fp32"]
    assert any(n.startswith("vae: VAE copy") for rec in records[dec] for n in rec["notes"])
    assert r.ui(pid)["precision_safe"][0]["notes"][-1] == (
        f"enforce downstream: 3 nodes get conformed inputs (My Preview #{preview}, PSTest_CastImage #{half}, "
        f"VAEDecode #{dec})")


def test_history_keeps_the_ui_of_a_wrapped_output_node_under_an_id_whose_meta_names_the_original(comfy):
    prompt, _, _, _, preview, _ = _graph()
    r = comfy.run(prompt)
    assert r.success, r.error
    meta = comfy.executor.history_result["meta"]
    (key,) = [k for k in r.outputs if meta[k]["display_node"] == preview]
    assert key != preview and key.startswith(f"{preview}.")  # the expanded node's own id
    assert meta[key]["real_node_id"] == preview
    assert len(r.outputs[key]["images"]) == 1


def test_an_unchanged_prompt_runs_again_from_the_cache_and_a_changed_input_reruns(comfy):
    prompt, _, dec, _, preview, sampler = _graph()
    comfy.run(prompt, fresh=True)
    r = comfy.run(prompt)
    cached = next(d["nodes"] for e, d in r.messages if e == "execution_cached")
    assert {dec, sampler} <= set(cached)
    assert preview not in cached  # an output wrapper always rebuilds its expansion (see EnforcedOutputNode)
    prompt[sampler]["inputs"]["seed"] = 1
    r = comfy.run(prompt)
    cached = next(d["nodes"] for e, d in r.messages if e == "execution_cached")
    assert dec not in cached  # its input changed upstream: the wrapper ran again


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


def test_wrapped_nodes_get_the_same_result_as_unwrapped_ones_when_dtypes_agree(comfy):
    def decoded(enforce):
        g = GraphBuilder()
        ckpt, sampler = txt2img(g, size=16)
        p = policy(g)
        p.set_input("enforce_downstream", enforce)
        p.set_input("vae", ckpt.out(2))
        dec = g.node("VAEDecode", samples=sampler.out(0), vae=p.out(3))
        g.node("PreviewImage", images=dec.out(0))
        assert comfy.run(g.finalize()).success
        return comfy.output(dec.id)  # a wrapper's output is the original node's, from inside its expansion

    assert torch.equal(decoded(False), decoded(True))


def test_list_outputs_are_left_out_and_an_output_node_fed_a_list_gets_each_item_conformed(comfy):
    g = GraphBuilder()
    ckpt, sampler = txt2img(g, size=16, batch=2)
    p = policy(g)
    p.set_input("enforce_downstream", True)
    p.set_input("vae", ckpt.out(2))
    dec = g.node("VAEDecode", samples=sampler.out(0), vae=p.out(3))
    half = g.node("PSTest_CastImage", image=dec.out(0), dtype="bf16")
    split = g.node("RebatchImages", images=half.out(0), batch_size=1)  # OUTPUT_IS_LIST: two IMAGEs
    preview = g.node("PreviewImage", images=split.out(0))
    save = g.node("PrecisionSafeSaveImage", images=half.out(0), filename_prefix="precision_safe_tests/enforce_list")
    r = comfy.run(g.finalize(), fresh=True)  # the policy runs (not reused from an earlier test): its note is this one
    assert r.success, r.error
    sent = comfy.last_prompt
    assert sent[split.id]["class_type"] == "RebatchImages" and sent[preview.id]["class_type"].endswith("Output")
    meta = comfy.executor.history_result["meta"]
    shown = [v for k, v in r.outputs.items() if meta[k]["display_node"] == preview.id]
    assert len(shown) == 1 and len(shown[0]["images"]) == 2  # the preview mapped over both items, as stock
    records = comfy.pack_module("nodes.host.run_records").registered(_prompt_id(r))
    assert [c for rec in records[preview.id] for c in rec["casts"]] == ["images: bf16 -> fp32"] * 2
    assert f"left as they are: RebatchImages #{split.id} (an output carries a list" in \
        r.ui(p.id)["precision_safe"][0]["notes"][-1]
    assert r.ui(save.id)["precision_safe"][0]["casts"] == ["images: bf16 -> fp32"]  # the pack's own node: not wrapped
