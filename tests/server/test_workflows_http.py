"""Every bundled workflow through the real HTTP API; one prompt that must fail lands on the right node."""
import glob
import io
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from comfy_client import ROOT, ui_to_api
from graphs import ERROR_MODE_PROMPT

WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_workflows_are_in_sync_with_their_source(server):
    sys.path.insert(0, os.path.join(ROOT, "scripts", "fixtures"))
    from make_workflows import build_all
    built = build_all(server.object_info())
    on_disk = {os.path.splitext(os.path.basename(p))[0]: _load(p) for p in WORKFLOWS}
    assert built == on_disk, "workflows/ is stale: run `make workflows`"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: os.path.basename(p)[:20])
def test_bundled_workflow_runs_headless(server, path):
    run = server.run(ui_to_api(_load(path), server.object_info()))
    assert run.success, run.error or run.rejected
    assert any(e["type"] == "execution_success" for e in run.events)
    images = run.images()
    assert images, "the workflow saved no image"
    for nid, ref in images:
        arr = np.asarray(Image.open(io.BytesIO(server.image_bytes(ref)))).astype(np.float32)
        if ref["filename"].startswith("rescue_core_black"):
            continue  # core's decode of the overflowing item is black on purpose; checked below
        assert np.isfinite(arr).all() and arr.std() > 2, f"{ref['filename']} is flat/black"
    records = run.precision_records()
    assert records, "no pack node reported its precision"
    for rec in records.values():
        assert rec["node"] and rec["seconds"] is not None


def test_black_image_rescue_tells_what_it_did(server):
    path = next(p for p in WORKFLOWS if "Black-image rescue" in p)
    run = server.run(ui_to_api(_load(path), server.object_info()))
    assert run.success
    safe = next(r for r in run.precision_records().values() if r["node"].startswith("Safe VAE Decode"))
    assert safe["ran"]["vae"] == "fp16 · cpu"
    assert safe["retries"] == ["items [1] fp16 -> bf16: finite"]
    means = {ref["filename"]: np.asarray(Image.open(io.BytesIO(server.image_bytes(ref)))).mean()
             for _, ref in run.images()}
    core_black = [v for k, v in means.items() if k.startswith("rescue_core_black")]
    safe_imgs = [v for k, v in means.items() if k.startswith("rescue_safe")]
    assert min(core_black) == 0.0 and min(safe_imgs) > 10  # stock decode wrote a black image, ours did not


def test_mismatch_in_error_mode_lands_on_the_node_over_http(server):
    prompt = ERROR_MODE_PROMPT
    run = server.run(prompt)
    assert not run.success
    assert run.error["node_id"] == "5"
    assert run.error["node_type"] == "PrecisionSafeVAEDecode"
    msg = run.error["exception_message"]
    assert "Safe VAE Decode #5" in msg and "input 'samples'" in msg
    assert "got bf16" in msg and "expects fp32" in msg and "Fix:" in msg


def test_invalid_prompt_is_rejected_with_node_errors(server):
    run = server.run({"1": {"class_type": "PrecisionSafeVAEDecode", "inputs": {}},
                      "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
    assert run.rejected and "1" in run.rejected["node_errors"]
    assert "samples" in json.dumps(run.rejected["node_errors"]["1"])
