"""Enforce downstream through a real ComfyUI server, on by default: the pack's on-prompt handler puts conform steps on
the links into governed nodes, and a client written the way ComfyUI's own script examples are (websocket until
`executing` with node None, then `/history/<id>` `outputs[node_id]`) finds everything under the ids it sent."""
import io
import json
import urllib.request
import uuid

import websocket
from PIL import Image

from graphs import POLICY, api_txt2img


def example_client(server, prompt: dict):
    """As ComfyUI's websockets_api_example.py: queue with a client id, read the websocket until this prompt's final
    `executing` message, then read the history. Returns (messages, history entry, images by node id)."""
    client_id = str(uuid.uuid4())
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}", timeout=300)
    try:
        req = urllib.request.Request(f"{server.url}/prompt", data=json.dumps(
            {"prompt": prompt, "client_id": client_id}).encode())
        prompt_id = json.loads(urllib.request.urlopen(req).read())["prompt_id"]
        messages = []
        while True:
            out = ws.recv()
            if not isinstance(out, str):
                continue
            message = json.loads(out)
            messages.append(message)
            data = message.get("data", {})
            if message["type"] == "executing" and data["node"] is None and data["prompt_id"] == prompt_id:
                break
    finally:
        ws.close()
    history = json.loads(urllib.request.urlopen(f"{server.url}/history/{prompt_id}").read())[prompt_id]
    images = {}
    for node_id in prompt:
        for image in history["outputs"].get(node_id, {}).get("images", []):
            images.setdefault(node_id, []).append(server.image_bytes(image))
    return messages, history, images


def _of(messages, kind):
    return [m["data"] for m in messages if m["type"] == kind]


def _policy(**over):
    return {"class_type": "PrecisionSafePolicy", "inputs": {**POLICY, **over}}


def _txt2img_saved(**policy):
    """The README's txt2img: checkpoint -> Precision Policy (enforce_downstream left at its default) -> KSampler ->
    VAEDecode -> core SaveImage "7"."""
    prompt = api_txt2img(model=("10", 1))
    prompt["2"]["inputs"]["clip"] = prompt["3"]["inputs"]["clip"] = ["10", 2]
    prompt.update({
        "10": _policy(model=["1", 0], clip=["1", 1], vae=["1", 2], **policy),
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["10", 3]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ps_enforce_http"}},
    })
    return prompt


def test_an_example_client_gets_every_image_and_message_under_the_ids_it_sent(server):
    prompt = _txt2img_saved()
    messages, history, images = example_client(server, prompt)
    assert history["status"]["status_str"] == "success"
    assert list(images) == ["7"] and len(images["7"]) == 1
    assert set(history["outputs"]) == {"7", "10"}  # the saver's images and the policy's report: nothing else
    executed = {d["node"] for d in _of(messages, "executed")}
    assert executed == {"7", "10"}
    ran = [d["node"] for d in _of(messages, "executing") if d["node"] is not None]
    assert {"6", "7", "8", "10"} <= set(ran)
    for d in _of(messages, "executing") + _of(messages, "executed"):
        if d["node"] in prompt:
            assert d["display_node"] == d["node"]
    assert {d["node"] for d in _of(messages, "progress")} == {"6"}  # the sampler's steps, on the sampler's id
    png = Image.open(io.BytesIO(images["7"][0]))
    saved = json.loads(png.text["prompt"])
    for node_id, node in prompt.items():  # every node the client sent, under its id and class
        assert saved[node_id]["class_type"] == node["class_type"]
    report = history["outputs"]["10"]["precision_safe"][0]["notes"][-1]
    assert report.startswith("enforce downstream: ") and "KSampler #6: model" in report and "SaveImage #7: images" in \
        report


def test_re_queueing_the_prompt_a_png_carries_changes_nothing(server):
    _, _, images = example_client(server, _txt2img_saved())
    saved = json.loads(Image.open(io.BytesIO(images["7"][0])).text["prompt"])
    again = server.run(saved)
    assert again.success, again.error
    assert [nid for nid, _ in again.images()] == ["7"]


def _image_chain(consumer: dict, cast: str = "fp16", **policy):
    """txt2img through the policy's VAE -> VAEDecode -> PSTest_CastImage (a node handing on a half IMAGE, as video
    loaders and upscalers do) -> `consumer` ("20") -> PreviewImage "21"."""
    prompt = api_txt2img()
    prompt.update({
        "10": _policy(vae=["1", 2], **policy),
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["10", 3]}},
        "9": {"class_type": "PSTest_CastImage", "inputs": {"image": ["8", 0], "dtype": cast}},
        "20": consumer,
        "21": {"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}},
    })
    return prompt


def test_half_images_and_masks_reach_core_numpy_and_convolution_nodes_at_the_dtype_they_take(server):
    blur = {"class_type": "ImageBlur", "inputs": {"image": ["9", 0], "blur_radius": 1, "sigma": 1.0}}
    for cast, policy in (("fp16", {}), ("fp16", {"intermediate_dtype": "fp16"}), ("bf16", {})):
        run = server.run(_image_chain(blur, cast, **policy))
        assert run.success, (cast, policy, run.error)
        assert [nid for nid, _ in run.images()] == ["21"]
    grow = {"class_type": "GrowMask", "inputs": {"mask": ["22", 0], "expand": 1, "tapered_corners": True}}
    for cast in ("fp16", "bf16"):
        prompt = _image_chain({"class_type": "MaskToImage", "inputs": {"mask": ["23", 0]}})
        prompt["22"] = {"class_type": "PSTest_CastMask", "inputs": {"image": ["8", 0], "dtype": cast}}
        prompt["23"] = grow
        run = server.run(prompt)
        assert run.success, (cast, run.error)


def test_without_a_policy_core_fails_on_those_inputs_as_stock(server):
    prompt = _image_chain({"class_type": "ImageBlur", "inputs": {"image": ["9", 0], "blur_radius": 1, "sigma": 1.0}})
    prompt["8"]["inputs"]["vae"] = ["1", 2]
    del prompt["10"]
    run = server.run(prompt)
    assert run.error is not None and run.error["node_id"] == "20"  # the raw torch error the policy prevents
    assert "Half" in run.error["exception_message"]


def test_a_node_holding_half_weights_gets_its_input_at_their_dtype(server):
    run = server.run(_image_chain({"class_type": "PSTest_HalfNormFilter", "inputs": {"image": ["9", 0]}}, "fp32"))
    assert run.success, run.error
    prompt = _image_chain({"class_type": "PSTest_HalfNormFilter", "inputs": {"image": ["9", 0]}}, "fp32")
    prompt["8"]["inputs"]["vae"] = ["1", 2]
    del prompt["10"]
    stock = server.run(prompt)
    assert stock.error is not None and "mixed dtype" in stock.error["exception_message"]


def test_error_mode_stops_on_the_users_node_in_the_packs_words(server):
    prompt = _image_chain({"class_type": "ImageBlur", "inputs": {"image": ["9", 0], "blur_radius": 1, "sigma": 1.0},
                           "_meta": {"title": "Blur it"}}, on_mismatch="error")
    messages, history, images = example_client(server, prompt)
    (error,) = _of(messages, "execution_error")
    assert error["node_id"] == "20" and error["node_type"] == "ImageBlur"
    msg = error["exception_message"]
    assert "[Blur it #20, input 'image'] got fp16 but Precision Policy #10 (enforce downstream) expects fp32" in msg
    assert "Fix: set on_mismatch to 'cast' on Precision Policy #10" in msg
    assert not images  # nothing downstream of the refused node ran


def test_an_empty_optional_input_is_named_on_the_policy_directly_and_through_dtype_inspect(server):
    prompt = api_txt2img(model=("10", 1))
    prompt["10"] = _policy()  # no MODEL connected, enforce on by default
    prompt["8"] = {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}}
    prompt["7"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    run = server.run(prompt)
    assert run.error is not None and run.error["node_id"] == "10", (run.success, run.rejected)
    assert "nothing is connected to its 'model' input" in run.error["exception_message"]
    assert "KSampler #6 (input 'model') needs it" in run.error["exception_message"]
    prompt = api_txt2img()
    prompt.update({
        "10": _policy(enforce_downstream=False),
        "11": {"class_type": "PrecisionSafeDtypeInspect", "inputs": {"value": ["10", 3]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["11", 0]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    })
    run = server.run(prompt)
    assert run.error is not None and run.error["node_id"] == "10", (run.success, run.rejected)
    assert "VAEDecode #8 (input 'vae') needs it" in run.error["exception_message"]


def test_an_invalid_prompt_is_refused_with_comfyuis_errors_on_the_users_node(server):
    prompt = _txt2img_saved()
    prompt["4"]["inputs"]["width"] = 8  # below EmptyLatentImage's minimum
    run = server.run(prompt)
    assert run.rejected is not None
    assert set(run.rejected["node_errors"]) == {"4"}
    assert run.rejected["node_errors"]["4"]["class_type"] == "EmptyLatentImage"
