"""The GPU tier's real thing: a ComfyUI server with this pack on CUDA, driven over HTTP + websocket.

Every bundled workflow, a default graph under strict Dtype Inspect (ComfyUI's own dtype choices on this GPU must
agree with `auto`), a policy that changes nothing producing the stock result bit for bit, and the fault-corpus
scenarios whose behaviour depends on the device. Skipped without CUDA (tests/gpu/conftest.py).
"""
import glob
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
OVERFLOW_VAE = "tiny_overflow_vae.safetensors"
from comfy_client import ComfyServer, link_testing_nodes, ui_to_api  # noqa: E402  (tests/support)
from graphs import POLICY, api_txt2img  # noqa: E402  (tests/support, on sys.path from tests/conftest.py)

pytestmark = pytest.mark.gpu
WORKFLOWS = sorted(glob.glob(str(ROOT / "workflows" / "*.json")))


@pytest.fixture(scope="module")
def server(comfy_dir, tmp_path_factory):
    link_testing_nodes(comfy_dir)
    with ComfyServer(comfy_dir, output_dir=str(tmp_path_factory.mktemp("gpu_out")), cpu=False) as s:
        stats = s.get("/system_stats")
        assert stats["devices"][0]["type"] == "cuda", stats
        yield s


def _txt2img(size=64, model=("1", 0), seed=0, steps=4):
    return api_txt2img(size, model, seed, steps, cfg=5.0)


def _pixels(server, ref):
    return np.asarray(Image.open(io.BytesIO(server.image_bytes(ref)))).astype(np.float32)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: os.path.basename(p)[:20])
def test_bundled_workflow_runs_on_cuda(server, path):
    with open(path) as f:
        run = server.run(ui_to_api(json.load(f), server.object_info()))
    assert run.success, run.error or run.rejected
    images = run.images()
    assert images
    for _, ref in images:
        if ref["filename"].startswith("rescue_core_black"):
            continue  # core's decode of the overflowing item: black on purpose
        assert _pixels(server, ref).std() > 1.0, ref
    for nid, rec in run.precision_records().items():
        for role, where in rec.get("ran", {}).items():  # IMAGE/LATENT live on ComfyUI's intermediate device
            assert where.endswith("· cpu" if role == "intermediate" else "· cuda"), (nid, role, where)


def test_strict_inspect_passes_on_a_default_graph(server):
    prompt = _txt2img()
    prompt["7"] = {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}}
    values = {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "cond": ["2", 0], "latent": ["6", 0],
              "image": ["7", 0]}
    for i, link in enumerate(values.values()):
        prompt[str(20 + i)] = {"class_type": "PrecisionSafeDtypeInspect", "inputs": {"value": link, "strict": True}}
    run = server.run(prompt)
    assert run.success, run.error
    for i, name in enumerate(values):
        text = run.outputs[str(20 + i)]["text"][0]
        print(f"{name}: {text.splitlines()[0]}")
        assert "agrees with the context" in text


def test_auto_policy_resolves_to_comfys_choices_and_changes_nothing(server):
    prompt = _txt2img(model=("5", 1), seed=7)
    prompt["5"] = {"class_type": "PrecisionSafePolicy", "inputs": {**POLICY, "model": ["1", 0], "clip": ["1", 1],
                                                                   "vae": ["1", 2]}}
    stock = _txt2img(seed=7)["6"]
    prompt["16"] = stock  # the same sampling on the input MODEL, in the same prompt
    prompt["7"] = {"class_type": "PrecisionSafeDtypeInspect", "inputs": {"value": ["1", 0]}}
    for nid in ("6", "16"):
        prompt[f"{nid}0"] = {"class_type": "PSTest_LatentDigest", "inputs": {"samples": [nid, 0]}}
    run = server.run(prompt)
    assert run.success, run.error
    rec = run.precision_records()["5"]
    print("policy:", json.dumps(rec["ran"]), rec["notes"])
    assert rec["ran"]["vae"] == "bf16 · cuda" and rec["ran"]["intermediate"] == "fp32 · cpu"
    assert rec["ran"]["detector"] == "bf16 · cuda"
    compute = run.outputs["7"]["text"][0].split("compute ")[1].split()[0]  # what ComfyUI chose for the MODEL
    assert rec["ran"]["unet"] == f"{compute} · cuda"
    assert all("no cost" in n for n in rec["notes"] if not n.startswith("enforce downstream")), rec["notes"]
    digests = [run.outputs[f"{nid}0"]["text"][0] for nid in ("6", "16")]
    assert digests[0] == digests[1], digests  # bit for bit the stock result


def test_overflowing_fp16_vae_is_repaired_per_item_on_cuda(server):
    prompt = _txt2img(size=16)
    prompt.update({
        "8": {"class_type": "VAELoader", "inputs": {"vae_name": OVERFLOW_VAE}},
        "9": {"class_type": "EmptyLatentImage", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
        "10": {"class_type": "LatentBatch", "inputs": {"samples1": ["9", 0], "samples2": ["6", 0]}},
        "5": {"class_type": "PrecisionSafePolicy", "inputs": {**POLICY, "vae_dtype": "fp16", "vae": ["8", 0]}},
        "11": {"class_type": "PrecisionSafeVAEDecode", "inputs": {"samples": ["10", 0], "vae": ["5", 3]}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["5", 3]}},
        "13": {"class_type": "PrecisionSafeDtypeInspect", "inputs": {"value": ["11", 0]}},
        "14": {"class_type": "PrecisionSafeDtypeInspect", "inputs": {"value": ["12", 0]}},
    })
    run = server.run(prompt)
    assert run.success, run.error
    rec = run.precision_records()["11"]
    assert rec["ran"]["vae"] == "fp16 · cuda" and rec["retries"] == ["items [1] fp16 -> bf16: finite"]
    assert "NaN 0 Inf 0" not in run.outputs["13"]["text"][0] and "finite" in run.outputs["13"]["text"][0]
    assert "NaN" in run.outputs["14"]["text"][0]  # core VAEDecode: the overflowing item is NaN (a black image)


def test_half_weight_model_through_guard_is_explained_on_ksampler(server):
    prompt = _txt2img(model=("11", 0))
    prompt.update({
        "10": {"class_type": "PSTest_HalfWeightsModel", "inputs": {"model": ["1", 0], "dtype": "bf16"}},
        "11": {"class_type": "PrecisionSafeGuard", "inputs": {"model": ["10", 0]}},
        "12": {"class_type": "PrecisionSafeDtypeInspect", "inputs": {"value": ["6", 0]}},
    })
    run = server.run(prompt)
    assert not run.success and run.error["node_id"] == "6", run.error
    msg = run.error["exception_message"]
    print(msg)
    assert msg.startswith("[KSampler #6 (guarded by Precision Guard #11)]") and "Fix:" in msg


def test_nan_latent_is_refused_on_cuda_blaming_the_sampler(server):
    prompt = _txt2img(size=16)
    prompt.update({
        "7": {"class_type": "PSTest_PoisonLatent", "inputs": {"samples": ["6", 0], "items": "0"}},
        "8": {"class_type": "PrecisionSafeVAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "PrecisionSafeDtypeInspect", "inputs": {"value": ["8", 0]}},
    })
    run = server.run(prompt)
    assert not run.success and run.error["node_id"] == "8"
    assert "sampler upstream" in run.error["exception_message"]
