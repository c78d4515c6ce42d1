"""`make demo` writes what a user gets: the PNGs as ComfyUI saved them, with prompt, workflow and precision chunks."""
import glob
import json
import os
import sys

from PIL import Image

from comfy_client import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts", "fixtures"))
from run_workflows import run_all  # noqa: E402


def test_the_demos_pngs_carry_prompt_workflow_and_precision_chunks(server, tmp_path):
    assert run_all(server, str(tmp_path)) == []
    pngs = sorted(glob.glob(str(tmp_path / "*" / "*.png")))
    assert len(pngs) >= len(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
    for path in pngs:
        text = Image.open(path).text
        assert {"prompt", "workflow", "precision"} <= set(text), (path, sorted(text))
        record = json.loads(text["precision"])
        assert record["records"], path
        assert json.loads(text["prompt"])[record["saved_by"]]["class_type"] == "PrecisionSafeSaveImage", path
