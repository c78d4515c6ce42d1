"""Fault-corpus scenarios (tests/comfy/test_fault_corpus.py) through a real ComfyUI server over HTTP and websocket:
the error event names the right node with the pack's message, the saved PNG carries the record, and after each
fault the same server runs the next prompt."""
import io
import json
import math
import time

import psutil
import pytest
from PIL import Image

from graphs import POLICY, api_txt2img as _txt2img


def _error(run, node_id, node_type):
    assert not run.success and run.error, run.rejected
    assert run.error["node_id"] == node_id and run.error["node_type"] == node_type, run.error
    return run.error


def test_guarded_core_vaedecode_with_half_weight_vae__error_event_on_vaedecode(server):
    prompt = _txt2img()
    prompt.update({
        "10": {"class_type": "PSTest_HalfWeightsVAE", "inputs": {"vae": ["1", 2], "dtype": "bf16"}},
        "11": {"class_type": "PrecisionSafeGuard", "inputs": {"vae": ["10", 0]}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["11", 1]}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
    })
    err = _error(server.run(prompt), "12", "VAEDecode")
    assert err["exception_type"].endswith("DtypeMismatchError")
    msg = err["exception_message"]
    assert msg.startswith("[VAEDecode #12 (guarded by Precision Guard #11)]")
    for part in ("vae.post_quant_conv (Conv2d, weights bf16)", "its input is fp32", "declares fp32",
                 "Fix: pass the VAE through Precision Policy with vae_dtype bf16"):
        assert part in msg, (part, msg)


def test_guarded_core_ksampler_with_half_weight_model__error_event_on_ksampler(server):
    prompt = _txt2img(model=("11", 0))
    prompt.update({
        "10": {"class_type": "PSTest_HalfWeightsModel", "inputs": {"model": ["1", 0], "dtype": "bf16"}},
        "11": {"class_type": "PrecisionSafeGuard", "inputs": {"model": ["10", 0]}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
    })
    err = _error(server.run(prompt), "6", "KSampler")
    msg = err["exception_message"]
    assert msg.startswith("[KSampler #6 (guarded by Precision Guard #11)]")
    assert "weights bf16" in msg and "unet_dtype bf16" in msg


def test_nan_latent__error_event_on_safe_decode_blaming_the_sampler(server):
    prompt = _txt2img()
    prompt.update({
        "10": {"class_type": "PSTest_PoisonLatent", "inputs": {"samples": ["6", 0], "items": "0"}},
        "11": {"class_type": "PrecisionSafeVAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}},
    })
    err = _error(server.run(prompt), "11", "PrecisionSafeVAEDecode")
    assert "already non-finite" in err["exception_message"] and "sampler upstream" in err["exception_message"]


def test_bf16_image__core_saver_fails_pack_saver_writes_png_with_the_records(server):
    image = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x336699}}
    cast = {"class_type": "PSTest_CastImage", "inputs": {"image": ["1", 0], "dtype": "bf16"}}
    stock = server.run({"1": image, "2": cast, "3": {"class_type": "SaveImage", "inputs": {
        "images": ["2", 0], "filename_prefix": "ps_http_stock"}}})
    assert "Got unsupported ScalarType BFloat16" in _error(stock, "3", "SaveImage")["exception_message"]

    run = server.run({"1": image, "2": cast, "3": {"class_type": "PrecisionSafeSaveImage", "inputs": {
        "images": ["2", 0], "filename_prefix": "ps_http_record"}}})
    assert run.success, run.error
    (node_id, ref), = run.images()
    assert node_id == "3" and ref["type"] == "output" and ref["filename"].startswith("ps_http_record_")
    png = Image.open(io.BytesIO(server.image_bytes(ref)))
    chunk = json.loads(png.text["precision"])
    assert json.loads(png.text["prompt"])["3"]["class_type"] == "PrecisionSafeSaveImage"
    assert chunk["prompt_id"] == run.prompt_id and chunk["saved_by"] == "3"
    own = chunk["records"][-1]
    assert own["record"]["casts"] == ["images: bf16 -> fp32"]
    assert own["record"] == run.precision_records()["3"]  # the same record as in /history


def test_overflow_retry_record_reaches_the_png_over_http(server):
    prompt = _txt2img()
    prompt.update({
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
        "8": {"class_type": "LatentBatch", "inputs": {"samples1": ["7", 0], "samples2": ["6", 0]}},
        "9": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_overflow_vae.safetensors"}},
        "10": {"class_type": "PrecisionSafePolicy", "inputs": {**POLICY, "vae_dtype": "fp16", "vae": ["9", 0]}},
        "11": {"class_type": "PrecisionSafeVAEDecode", "inputs": {"samples": ["8", 0], "vae": ["10", 3]}},
        "12": {"class_type": "PrecisionSafeSaveImage", "inputs": {"images": ["11", 0],
                                                                 "filename_prefix": "ps_http_overflow"}},
    })
    run = server.run(prompt)
    assert run.success, run.error
    refs = [ref for nid, ref in run.images() if nid == "12"]
    assert len(refs) == 2
    for ref in refs:
        chunk = json.loads(Image.open(io.BytesIO(server.image_bytes(ref))).text["precision"])
        by_node = {e["node_id"]: e for e in chunk["records"]}
        assert by_node["11"]["upstream"] and by_node["11"]["record"]["retries"] == ["items [1] fp16 -> bf16: finite"]
        assert by_node["11"]["record"] == run.precision_records()["11"]
        assert by_node["10"]["class_type"] == "PrecisionSafePolicy"


def test_fp16_image_into_core_upscale_with_model__enforced_policy_casts_it__finite_image(server):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x336699}},
        "2": {"class_type": "PSTest_CastImage", "inputs": {"image": ["1", 0], "dtype": "fp16"}},
        "3": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "tiny_compact_x2.safetensors"}},
        "4": {"class_type": "PrecisionSafePolicy", "inputs": {**POLICY, "upscale_model": ["3", 0],
                                                              "enforce_downstream": True}},
        "5": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["4", 4], "image": ["2", 0]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    }
    run = server.run(prompt)
    assert run.success, run.error
    (node_id, ref), = run.images()
    assert node_id == "6" and Image.open(io.BytesIO(server.image_bytes(ref))).size == (16, 16)


def test_half_model_patch_behind_guard__error_event_on_ksampler_names_the_patch(server):
    prompt = _txt2img(model=("11", 0))
    prompt.update({
        "10": {"class_type": "PSTest_HalfPatch", "inputs": {"model": ["1", 0], "dtype": "bf16"}},
        "11": {"class_type": "PrecisionSafeGuard", "inputs": {"model": ["10", 0]}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
    })
    msg = _error(server.run(prompt), "6", "KSampler")["exception_message"]
    assert msg.startswith("[KSampler #6 (guarded by Precision Guard #11)] dtype mismatch in patch attn2_output_patch[0] "
                          "(ProjectionPatch, weights bf16)"), msg
    assert "Fix: turn on enforce_downstream" in msg


# -- issue 11: each fault stops on the right node, then the same server serves the next prompt ------------------------

def _policy(**over):
    return {"class_type": "PrecisionSafePolicy", "inputs": {**POLICY, **over}}


def _decode_to(prompt, samples, vae=("1", 2), node="11"):
    prompt.update({node: {"class_type": "PrecisionSafeVAEDecode", "inputs": {"samples": list(samples),
                                                                            "vae": list(vae)}},
                   "99": {"class_type": "PreviewImage", "inputs": {"images": [node, 0]}}})
    return prompt


def _nan_image_into_saver():
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "PSTest_PoisonImage", "inputs": {"image": ["1", 0], "items": "0"}},
            "3": {"class_type": "PrecisionSafeSaveImage", "inputs": {"images": ["2", 0],
                                                                    "filename_prefix": "ps_http_nan"}}}


def _wide_latent_into_guarded_vaedecode():
    prompt = _txt2img()
    prompt.update({"10": {"class_type": "PSTest_ReshapeLatent", "inputs": {"samples": ["6", 0], "channels": 16,
                                                                          "batch": -1}},
                   "11": {"class_type": "PrecisionSafeGuard", "inputs": {"vae": ["1", 2]}},
                   "12": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["11", 1]}},
                   "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}}})
    return prompt


def _policy_without_model_into_ksampler():
    prompt = _txt2img(model=("10", 1))
    prompt["10"] = _policy()
    return _decode_to(prompt, ("6", 0))


def _guard_with_nothing_into_ksampler():
    prompt = _txt2img(model=("10", 0))
    prompt["10"] = {"class_type": "PrecisionSafeGuard", "inputs": {}}
    return _decode_to(prompt, ("6", 0))


def _policy_without_vae_into_safe_decode():
    prompt = _txt2img()
    prompt["10"] = _policy()
    return _decode_to(prompt, ("6", 0), vae=("10", 3))


def _intermediate_bf16_into_core_preview():
    prompt = _txt2img()
    prompt["10"] = _policy(intermediate_dtype="bf16", enforce_downstream=False)  # on (default) conforms it
    prompt["11"] = {"class_type": "PrecisionSafeVAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2],
                                                                      "context": ["10", 0]}}
    prompt["12"] = {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}}
    return prompt


def _decode_too_big_even_tiled():
    image = 3 * 16384 * 16384 * 4
    batch = math.ceil(2 * psutil.virtual_memory().available / image)
    return {"1": {"class_type": "PSTest_HugeLatent", "inputs": {"width": 16384, "height": 16384, "batch": batch}},
            "2": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_taesd.safetensors"}},
            "3": {"class_type": "PrecisionSafeVAEDecode", "inputs": {"samples": ["1", 0], "vae": ["2", 0]}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}


FAULTS = {  # name: (prompt maker, failing node id, its class, parts of the message)
    "nan image into the pack's saver": (_nan_image_into_saver, "3", "PrecisionSafeSaveImage",
                                        ["from PSTest_PoisonImage #2 hold NaN/Inf", "save_nonfinite"]),
    "16-channel latent into a guarded VAEDecode": (_wide_latent_into_guarded_vaedecode, "12", "VAEDecode",
                                                   ["takes 4 channels but its input has 16", "SD3"]),
    "policy without a MODEL into KSampler": (_policy_without_model_into_ksampler, "10", "PrecisionSafePolicy",
                                            ["input 'model'] nothing is connected", "KSampler #6"]),
    "guard with nothing connected into KSampler": (_guard_with_nothing_into_ksampler, "10", "PrecisionSafeGuard",
                                                   ["input 'model'] nothing is connected"]),
    "policy without a VAE into Safe VAE Decode": (_policy_without_vae_into_safe_decode, "10", "PrecisionSafePolicy",
                                                  ["input 'vae']", "Safe VAE Decode #11 (input 'vae')"]),
    "intermediate bf16 into core Preview Image": (_intermediate_bf16_into_core_preview, "12", "PreviewImage",
                                                  ["Got unsupported ScalarType BFloat16"]),
    "a decode too big even tiled": (_decode_too_big_even_tiled, "3", "PrecisionSafeVAEDecode",
                                    ["16384x16384 px needs", "Fix: decode fewer or smaller latents"]),
}


def _next_prompt_runs(server, seed):
    prompt = _decode_to(_txt2img(), ("6", 0))
    prompt["6"]["inputs"]["seed"] = seed  # a new prompt, not one the cache answers
    run = server.run(prompt)
    assert run.success, run.error
    assert [nid for nid, _ in run.images()] == ["99"]


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_stops_on_its_node_and_the_server_runs_the_next_prompt(server, name):
    make, node_id, node_type, parts = FAULTS[name]
    run = server.run(make())
    err = _error(run, node_id, node_type)
    for part in parts:
        assert part in err["exception_message"], (part, err["exception_message"])
    if name.startswith("intermediate bf16"):
        warnings = run.precision_records()["11"]["warnings"]
        assert any(w.startswith("IMAGE output is bf16") for w in warnings), warnings
    _next_prompt_runs(server, seed=list(FAULTS).index(name) + 100)


def test_interrupt_stops_a_long_tiled_decode_and_the_next_prompt_runs(server):
    """A decode ComfyUI estimates at four times the free memory goes tiled (tiny TAESD: about a second or more per
    512 px tile on 2 cores, dozens of tiles); POST /interrupt after the first tile stops it within a tile or two."""
    per_latent_pixel = 2178 * 64 * 4  # ComfyUI's decode estimate for SD-type VAEs (TAESD too), bytes at fp32
    side = math.ceil(math.sqrt(4 * psutil.virtual_memory().available / per_latent_pixel))
    if side > 2048:
        pytest.skip("this machine has more memory than a 16384 px decode needs")
    prompt = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": side * 8, "height": side * 8,
                                                                 "batch_size": 1}},
              "2": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_taesd.safetensors"}},
              "3": {"class_type": "PrecisionSafeVAEDecode", "inputs": {"samples": ["1", 0], "vae": ["2", 0]}},
              "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    seen = {}

    def interrupt_after_the_first_tile(message):
        data = message.get("data", {})
        if message["type"] == "progress" and data.get("node") == "3" and "at" not in seen:
            seen.update(at=time.monotonic(), value=data["value"], max=data["max"])
            assert server.post("/interrupt", {})[0] == 200

    run = server.run(prompt, timeout=300, on_event=interrupt_after_the_first_tile)
    stopped = time.monotonic()
    assert seen, "no progress from the decode: it did not go tiled"
    assert seen["max"] >= 25 and seen["value"] < seen["max"]  # dozens of tiles, one done when interrupted
    assert not run.success and run.events[-1]["type"] == "execution_interrupted"
    assert run.events[-1]["data"]["node_id"] == "3"
    assert stopped - seen["at"] < 60, stopped - seen["at"]  # a tile or two, not the rest of the decode
    _next_prompt_runs(server, seed=1)
