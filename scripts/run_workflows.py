"""`make demo`: run every workflow in workflows/ through a headless ComfyUI's HTTP API; write the images and a
readable precision report (what ran at which dtype, what was cast, what was retried) under out/."""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comfy_client import COMFY_DIR, ComfyServer, ui_to_api  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


def report_lines(name, workflow, run) -> list[str]:
    titles = {str(n["id"]): n.get("title") or n["type"] for n in workflow["nodes"]}
    lines = [f"# {name}", f"status: {'success' if run.success else 'FAILED'}"]
    if run.error:
        lines.append(f"error on node {run.error['node_id']} ({titles.get(run.error['node_id'])}): "
                     f"{run.error['exception_message']}")
    for nid, out in sorted(run.outputs.items(), key=lambda kv: int(kv[0])):
        for text in out.get("text", []):
            lines.append(f"\n## node {nid}: {titles.get(nid)}\n{text}")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy", default=COMFY_DIR)
    ap.add_argument("--out", default=os.path.join(ROOT, "out"))
    args = ap.parse_args()
    out_root = os.path.abspath(args.out)
    os.makedirs(out_root, exist_ok=True)
    failed = []
    with ComfyServer(args.comfy, log_path=os.path.join(out_root, "comfyui.log")) as server:
        for path in sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json"))):
            name = os.path.splitext(os.path.basename(path))[0]
            with open(path) as f:
                workflow = json.load(f)
            run = server.run(ui_to_api(workflow, server.object_info()))
            folder = os.path.join(out_root, slug(name))
            os.makedirs(folder, exist_ok=True)
            for nid, ref in run.images():
                img = Image.open(io.BytesIO(server.image_bytes(ref)))
                img.save(os.path.join(folder, ref["filename"]))
                arr = np.asarray(img)
                print(f"  {name}: node {nid} -> {ref['filename']} {img.size} mean {arr.mean():.1f}")
            with open(os.path.join(folder, "precision_report.txt"), "w") as f:
                f.write("\n".join(report_lines(name, workflow, run)) + "\n")
            with open(os.path.join(folder, "history.json"), "w") as f:
                json.dump(run.outputs, f, indent=1)
            print(f"{'ok    ' if run.success else 'FAILED'} {name} -> {folder}")
            if not run.success:
                failed.append(name)
    print(f"\nimages and precision reports: {out_root}")
    if failed:
        sys.exit(f"failed workflows: {failed}")


if __name__ == "__main__":
    main()
