"""PrecisionSafeSaveImage through the real executor: core SaveImage's files and metadata plus a `precision` PNG chunk
holding the precision record of every pack node of the run."""
import asyncio
import json
import os
import uuid

import pytest
import torch
from comfy_execution.graph_utils import GraphBuilder
from PIL import Image

from comfy_inproc import RunResult
from graphs import overflow_batch, overflow_vae, policy, txt2img

WORKFLOW = {"nodes": [], "links": [], "version": 0.4, "extra": {"note": "precision-safe test"}}


def _run(comfy, prompt, client_id="ps-test"):
    """comfy.run with the extra data the frontend sends: a client id and the UI workflow for the PNG."""
    comfy.server.messages = []
    prompt_id = str(uuid.uuid4())
    valid = asyncio.run(comfy.execution.validate_prompt(prompt_id, prompt, None))
    assert valid[0], valid
    extra = {"extra_pnginfo": {"workflow": WORKFLOW}}
    if client_id:
        extra["client_id"] = client_id
    comfy.executor.execute(prompt, prompt_id, extra, valid[2])
    error = next((d for e, d in comfy.executor.status_messages if e == "execution_error"), None)
    outputs = {k: v for k, v in comfy.executor.history_result.get("outputs", {}).items()}
    return RunResult(comfy.executor.success, outputs, list(comfy.executor.status_messages), error), prompt_id


@pytest.fixture
def prefix():
    """A unique filename prefix in a test subfolder of the output directory; the files are removed afterwards."""
    import folder_paths
    sub = os.path.join(folder_paths.get_output_directory(), "precision_safe_tests")
    name = f"record_{uuid.uuid4().hex[:8]}"
    yield f"precision_safe_tests/{name}"
    if os.path.isdir(sub):
        for f in os.listdir(sub):
            if f.startswith(name):
                os.remove(os.path.join(sub, f))


def _png(ref):
    import folder_paths
    path = os.path.join(folder_paths.get_output_directory(), ref["subfolder"], ref["filename"])
    im = Image.open(path)
    im.load()
    return im


def _chunk(ref):
    return json.loads(_png(ref).text["precision"])


def _overflow_graph(g, prefix, seed=0):
    ckpt, sampler = txt2img(g, size=16, seed=seed)
    batch = overflow_batch(g, sampler)
    p = policy(g, vae_dtype="fp16")
    p.set_input("vae", overflow_vae(g).out(0))
    safe = g.node("PrecisionSafeVAEDecode", samples=batch.out(0), vae=p.out(3))
    save = g.node("PrecisionSafeSaveImage", images=safe.out(0), filename_prefix=prefix)
    return p, safe, save


def test_png_holds_the_safe_decode_record_with_its_retry(comfy, prefix):
    g = GraphBuilder()
    p, safe, save = _overflow_graph(g, prefix)
    r, prompt_id = _run(comfy, g.finalize())
    assert r.success, r.error
    refs = r.outputs[save.id]["images"]
    assert [x["filename"] for x in refs] == [f"{prefix.split('/')[1]}_00001_.png", f"{prefix.split('/')[1]}_00002_.png"]
    assert all(x["type"] == "output" and x["subfolder"] == "precision_safe_tests" for x in refs)
    for ref in refs:
        im = _png(ref)
        assert json.loads(im.text["prompt"])[safe.id]["class_type"] == "PrecisionSafeVAEDecode"  # core metadata
        assert json.loads(im.text["workflow"]) == WORKFLOW
        chunk = json.loads(im.text["precision"])
        assert chunk["format"] == "precision_safe.record/1"
        assert chunk["prompt_id"] == prompt_id and chunk["saved_by"] == save.id
        by_node = {e["node_id"]: e for e in chunk["records"]}
        decode = by_node[safe.id]
        assert decode["class_type"] == "PrecisionSafeVAEDecode" and decode["upstream"] is True
        assert decode["record"]["retries"] == ["items [1] fp16 -> bf16: finite"]
        assert decode["record"]["ran"]["vae"] == "fp16 · cpu"
        assert by_node[p.id]["class_type"] == "PrecisionSafePolicy" and by_node[p.id]["upstream"] is True
        assert chunk["records"][-1]["node_id"] == save.id  # the save node's own record comes last
        assert decode["record"] == r.outputs[safe.id]["precision_safe"][0]  # what /history shows
    pixels = torch.tensor(list(_png(refs[1]).tobytes()), dtype=torch.float32)
    assert pixels.std() > 1  # the rescued item is not black


def test_cached_upstream_records_are_kept_and_counter_continues(comfy, prefix):
    """Only the file name changes in the second run: everything upstream is reused from the cache and makes no
    record (nor any history entry), yet the PNG still holds the records that made it, which came with the reused
    IMAGE, marked cached. The file counter continues like core SaveImage's, shared with a core SaveImage on the same
    prefix."""
    g = GraphBuilder(prefix="cached")  # stable node ids across runs, as in the editor
    policy_node, safe, save = _overflow_graph(g, prefix, seed=1)
    comfy.executor.reset()  # every node runs under these ids (a cached output carries the ids of the run that made it)
    r, _ = _run(comfy, g.finalize())
    assert r.success, r.error
    first = {e["node_id"]: e for e in _chunk(r.outputs[save.id]["images"][0])["records"]}
    g2 = GraphBuilder(prefix="cached")
    _, safe2, save2 = _overflow_graph(g2, prefix + "_b", seed=1)
    core = g2.node("SaveImage", images=safe2.out(0), filename_prefix=prefix)
    r2, _ = _run(comfy, g2.finalize())
    assert r2.success, r2.error
    assert any(e == "execution_cached" and safe2.id in d["nodes"] for e, d in r2.messages)
    assert safe2.id not in r2.outputs  # core keeps no ui of a cached node in this prompt's history
    by_node = {e["node_id"]: e for e in _chunk(r2.outputs[save2.id]["images"][0])["records"]}
    decode = by_node[safe2.id]
    assert decode["cached"] is True and decode["upstream"] is True
    assert decode["record"] == first[safe.id]["record"]
    assert decode["record"]["retries"] == ["items [1] fp16 -> bf16: finite"]
    # the policy's record came with its VAE into the decode, and from there with the IMAGE
    assert by_node[policy_node.id]["cached"] is True and by_node[policy_node.id]["upstream"] is True
    assert by_node[policy_node.id]["record"] == first[policy_node.id]["record"]
    assert _chunk(r2.outputs[save2.id]["images"][0])["unrecorded_upstream"] == []
    assert [x["filename"] for x in r2.outputs[core.id]["images"]] == [
        f"{prefix.split('/')[1]}_00003_.png", f"{prefix.split('/')[1]}_00004_.png"]


def test_half_and_nonfinite_images_are_saved_and_recorded(comfy, prefix):
    g = GraphBuilder()
    img = g.node("EmptyImage", width=8, height=8, batch_size=2, color=0x336699)
    poisoned = g.node("PSTest_PoisonImage", image=img.out(0), items="1")
    half = g.node("PSTest_CastImage", image=poisoned.out(0), dtype="bf16")
    save = g.node("PrecisionSafeSaveImage", images=half.out(0), filename_prefix=prefix, save_nonfinite=True)
    r, _ = _run(comfy, g.finalize())
    assert r.success, r.error
    own = r.outputs[save.id]["precision_safe"][0]
    assert own["casts"] == ["images: bf16 -> fp32"]
    assert own["warnings"] == [f"items [1] hold NaN/Inf (from PSTest_CastImage #{half.id}): saved anyway "
                               "(save_nonfinite), NaN pixels are black"]
    refs = r.outputs[save.id]["images"]
    assert _png(refs[0]).getpixel((0, 0)) == (0x33, 0x66, 0x99) and _png(refs[1]).getpixel((0, 0)) == (0, 0, 0)
    assert _chunk(refs[0])["records"] == [{"node_id": save.id, "class_type": "PrecisionSafeSaveImage",
                                           "upstream": False, "cached": False, "record": own}]


def _guarded_vae_graph(g, prefix, safe_decode):
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="tiny_sd15.safetensors")
    guard = g.node("PrecisionSafeGuard", vae=ckpt.out(2))
    img = g.node("EmptyImage", width=8, height=8, batch_size=1, color=0)
    enc = g.node("VAEEncode", pixels=img.out(0), vae=guard.out(1))
    dec = g.node("PrecisionSafeVAEDecode" if safe_decode else "VAEDecode", samples=enc.out(0), vae=guard.out(1))
    save = g.node("PrecisionSafeSaveImage", images=dec.out(0), filename_prefix=prefix)
    return guard, dec, save


def test_records_come_with_the_values_also_without_a_client_id(comfy, prefix):
    """PrecisionGuard's record rides on its VAE copy into Safe VAE Decode and from there on the IMAGE to the saver;
    no client is listening."""
    g = GraphBuilder()
    guard, dec, save = _guarded_vae_graph(g, prefix, safe_decode=True)
    r, prompt_id = _run(comfy, g.finalize(), client_id=None)
    assert r.success, r.error
    chunk = _chunk(r.outputs[save.id]["images"][0])
    assert [e["node_id"] for e in chunk["records"]] == [guard.id, dec.id, save.id]  # upstream first
    by_node = {e["node_id"]: e for e in chunk["records"]}
    assert by_node[guard.id]["class_type"] == "PrecisionSafeGuard" and by_node[guard.id]["upstream"] is True
    assert by_node[guard.id]["record"]["notes"] == ["VAE copy: decode/encode wrapped"]
    assert by_node[guard.id]["record"]["node"] == f"Precision Guard #{guard.id}"
    assert by_node[dec.id]["record"]["context_source"] == "default (auto)"
    assert chunk["unrecorded_upstream"] == [] and chunk["prompt_id"] == prompt_id
    assert r.outputs[save.id]["precision_safe"][0]["node"] == f"Save Image (with precision record) #{save.id}"


def test_pack_nodes_whose_records_a_core_node_dropped_are_listed_from_the_prompt(comfy, prefix):
    """Core VAEDecode makes a new IMAGE from the guarded VAE's decode: the guard's record does not reach the saver,
    and the chunk names the guard instead of leaving it out silently."""
    g = GraphBuilder()
    guard, _, save = _guarded_vae_graph(g, prefix, safe_decode=False)
    r, _ = _run(comfy, g.finalize())
    assert r.success, r.error
    chunk = _chunk(r.outputs[save.id]["images"][0])
    assert [e["node_id"] for e in chunk["records"]] == [save.id]
    assert chunk["unrecorded_upstream"] == [guard.id]


def test_records_ride_on_new_objects_never_on_the_values_a_node_received(comfy, prefix):
    """Dtype Inspect hands its value on with its record: a view of the tensor carries it; the EmptyImage output it
    got (cached, shared with every other consumer) carries nothing."""
    records = comfy.pack_module("nodes.host.records")
    g = GraphBuilder()
    img = g.node("EmptyImage", width=8, height=8, batch_size=1, color=0)
    inspect = g.node("PrecisionSafeDtypeInspect", value=img.out(0))
    save = g.node("PrecisionSafeSaveImage", images=inspect.out(0), filename_prefix=prefix)
    r, _ = _run(comfy, g.finalize())
    assert r.success, r.error
    assert records.carried(comfy.output(img.id)) == [] and not hasattr(comfy.output(img.id), records.KEY)
    handed_on = comfy.output(inspect.id)
    assert [e["node_id"] for e in records.carried(handed_on)] == [inspect.id]
    assert handed_on.data_ptr() == comfy.output(img.id).data_ptr()  # a view: no copy of the pixels
    chunk = _chunk(r.outputs[save.id]["images"][0])
    assert [(e["node_id"], e["record"]["node"]) for e in chunk["records"]] == [
        (inspect.id, f"Dtype Inspect #{inspect.id}"), (save.id, f"Save Image (with precision record) #{save.id}")]


def test_a_record_reaching_a_node_by_two_inputs_is_written_once(comfy, prefix):
    """The policy's record rides on both its MODEL and its VAE into Precision Guard: the PNG holds it once."""
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="tiny_sd15.safetensors")
    p = policy(g)
    p.set_input("model", ckpt.out(0))
    p.set_input("vae", ckpt.out(2))
    guard = g.node("PrecisionSafeGuard", model=p.out(1), vae=p.out(3))
    img = g.node("EmptyImage", width=8, height=8, batch_size=1, color=0)
    enc = g.node("VAEEncode", pixels=img.out(0), vae=guard.out(1))
    dec = g.node("PrecisionSafeVAEDecode", samples=enc.out(0), vae=guard.out(1))
    save = g.node("PrecisionSafeSaveImage", images=dec.out(0), filename_prefix=prefix)
    r, _ = _run(comfy, g.finalize())
    assert r.success, r.error
    chunk = _chunk(r.outputs[save.id]["images"][0])
    assert [e["node_id"] for e in chunk["records"]] == [p.id, guard.id, dec.id, save.id]
    assert chunk["records"][1]["record"]["context_source"] == "attached to MODEL"
