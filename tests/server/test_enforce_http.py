"""Enforce downstream through a real ComfyUI server: the pack's on-prompt handler rewrites the POSTed prompt, errors
arrive on the node the user made, /history stays readable (scripts/comfy_client.py maps expanded ids back), and an
invalid prompt gets ComfyUI's own errors on the user's nodes."""
import io
import json

from PIL import Image

from graphs import POLICY, api_txt2img as _txt2img


def _enforced(on_mismatch="cast", saver="SaveImage"):
    """txt2img -> VAEDecode (VAE through an enforcing policy) -> bf16 IMAGE -> a core saver (node 13)."""
    prompt = _txt2img()
    prompt.update({
        "10": {"class_type": "PrecisionSafePolicy", "inputs": {
            **POLICY, "on_mismatch": on_mismatch, "vae": ["1", 2], "enforce_downstream": True}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["10", 3]}},
        "12": {"class_type": "PSTest_CastImage", "inputs": {"image": ["11", 0], "dtype": "bf16"}},
        "13": {"class_type": saver, "inputs": {"images": ["12", 0], "filename_prefix": "ps_http_enforced"},
               "_meta": {"title": "Save the result"}},
    })
    return prompt


def test_bf16_image_into_core_saveimage_is_saved_and_the_ui_is_under_the_users_node(server):
    run = server.run(_enforced())
    assert run.success, run.error
    (node_id, ref), = run.images()
    assert node_id == "13" and ref["filename"].startswith("ps_http_enforced_")
    png = Image.open(io.BytesIO(server.image_bytes(ref)))
    assert png.size == (16, 16)
    sent = json.loads(png.text["prompt"])  # core SaveImage embeds the prompt that ran: the rewritten one
    assert sent["13"]["class_type"] == "PrecisionSafeEnforcedOutput" and sent["6"]["class_type"] == "KSampler"
    again = server.run(sent)  # re-queued from the PNG: the handler does not wrap twice
    assert again.success, again.error
    (node_id, cached_ref), = again.images()
    assert node_id == "13" and cached_ref == ref  # the saver's result reused from the cache, as stock: no second file


def test_an_inserted_steps_error_is_an_execution_error_on_the_users_node(server):
    run = server.run(_enforced(on_mismatch="error"))
    assert not run.success and run.error["node_id"] == "13"
    assert run.error["node_type"] == "SaveImage" and run.error["executed_node_type"] == "PrecisionSafeEnforcedOutput"
    msg = run.error["exception_message"]
    assert msg.startswith("[Save the result #13, input 'images'] got bf16 but PrecisionPolicy #10 (enforce downstream) "
                          "expects fp32"), msg
    assert "Fix: set on_mismatch to 'cast' on PrecisionPolicy #10" in msg


def test_an_invalid_enforced_prompt_is_refused_with_comfyuis_errors_on_the_users_node(server):
    prompt = _enforced()
    prompt["4"]["inputs"]["width"] = 8  # below EmptyLatentImage's minimum
    run = server.run(prompt)
    assert run.rejected is not None
    assert set(run.rejected["node_errors"]) == {"4"}
    assert run.rejected["node_errors"]["4"]["class_type"] == "EmptyLatentImage"
