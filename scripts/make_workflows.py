"""Write the bundled example workflows (UI format, as the editor saves them) into workflows/.

Each workflow is described below by node type, widget values by input name, and links; the node definitions
come from a real server's /object_info, so widget order and slot types are ComfyUI's own. `--check` compares
instead of writing (the test suite runs it so the files stay in sync with this source).

Usage: python scripts/make_workflows.py [--comfy DIR] [--check]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comfy_client import COMFY_DIR, ComfyServer, _has_control_widget, _input_specs, _is_widget  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COL_W, ROW_H = 340, 40


class Workflow:
    def __init__(self, object_info):
        self.info = object_info
        self.nodes, self.links = [], []

    def add(self, type_, col, row, title=None, **widgets):
        info = self.info[type_]
        node = {"id": len(self.nodes) + 1, "type": type_, "pos": [col * COL_W, row * ROW_H], "size": [300, 120],
                "flags": {}, "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [],
                "properties": {"Node name for S&R": type_}, "widgets_values": []}
        if title:
            node["title"] = title
        for name, spec in _input_specs(info):
            if _is_widget(spec):
                default = spec[1].get("default") if len(spec) > 1 and isinstance(spec[1], dict) else None
                if default is None and isinstance(spec[0], list):
                    default = spec[0][0]
                node["widgets_values"].append(widgets.pop(name, default))
                if _has_control_widget(name, spec):
                    node["widgets_values"].append("fixed")
            else:
                node["inputs"].append({"name": name, "type": spec[0] if isinstance(spec[0], str) else "COMBO",
                                       "link": None})
        if widgets:
            raise KeyError(f"{type_} has no widgets {sorted(widgets)}")
        node["outputs"] = [{"name": t, "type": t, "links": [], "slot_index": i} for i, t in enumerate(info["output"])]
        self.nodes.append(node)
        return node

    def add_note(self, col, row, text, size=(300, 160)):
        """A frontend-only Note (no server node behind it; dropped when the workflow is queued)."""
        node = {"id": len(self.nodes) + 1, "type": "Note", "pos": [col * COL_W, row * ROW_H], "size": list(size),
                "flags": {}, "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                "widgets_values": [text]}
        self.nodes.append(node)
        return node

    def link(self, src, slot, dst, input_name):
        link_id = len(self.links) + 1
        inp = next(i for i in dst["inputs"] if i["name"] == input_name)
        inp["link"] = link_id
        src["outputs"][slot]["links"].append(link_id)
        self.links.append([link_id, src["id"], slot, dst["id"], dst["inputs"].index(inp), src["outputs"][slot]["type"]])

    def to_json(self):
        """Output slots are written up to the last linked one and named by their type: the editor rebuilds a
        node's outputs from its definition on load (frontends 1.32 and 1.49), and the definitions' output names
        and unlinked outputs differ between ComfyUI versions (0.33 names V3 outputs by their id and gives SaveImage
        an IMAGE output), so the files come out the same whichever ComfyUI's /object_info built them."""
        nodes = []
        for node in self.nodes:
            linked = [o["slot_index"] for o in node["outputs"] if o["links"]]
            nodes.append({**node, "outputs": node["outputs"][:linked[-1] + 1] if linked else []})
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def _prompts(w, clip, slot, col, row, text):
    """A prompt and, below it, an empty negative prompt, both encoded by `clip`'s output `slot`."""
    pos = w.add("CLIPTextEncode", col, row, text=text)
    neg = w.add("CLIPTextEncode", col, row + 5, text="")
    for n in (pos, neg):
        w.link(clip, slot, n, "clip")
    return pos, neg


def _txt2img(w, size, batch=1, prompt="a red square on a blue background"):
    ckpt = w.add("CheckpointLoaderSimple", 0, 0, ckpt_name="tiny_sd15.safetensors")
    pos, neg = _prompts(w, ckpt, 1, 1, 0, prompt)
    empty = w.add("EmptyLatentImage", 1, 10, width=size, height=size, batch_size=batch)
    ks = w.add("KSampler", 2, 0, seed=0, steps=2, cfg=2.0, sampler_name="euler", scheduler="normal", denoise=1.0)
    w.link(ckpt, 0, ks, "model")
    w.link(pos, 0, ks, "positive")
    w.link(neg, 0, ks, "negative")
    w.link(empty, 0, ks, "latent_image")
    return ckpt, ks


def _checkpoint_through_policy(w, **choices):
    """CheckpointLoaderSimple whose MODEL, CLIP and VAE all pass through a PrecisionPolicy."""
    ckpt = w.add("CheckpointLoaderSimple", 0, 0, ckpt_name="tiny_sd15.safetensors")
    policy = w.add("PrecisionSafePolicy", 1, 0, **choices)
    for slot, name in ((0, "model"), (1, "clip"), (2, "vae")):
        w.link(ckpt, slot, policy, name)
    return policy


def _save(w, image_src, col, row, prefix, scale_to=None):
    if scale_to:
        up = w.add("ImageScale", col, row, upscale_method="nearest-exact", width=scale_to, height=scale_to,
                   crop="disabled")
        w.link(image_src, 0, up, "image")
        image_src, col = up, col + 1
    save = w.add("SaveImage", col, row, filename_prefix=prefix)
    w.link(image_src, 0, save, "images")
    return save


def black_image_rescue(info):
    """The same latent batch decoded by core VAEDecode and by SafeVAEDecode with an fp16 VAE that overflows."""
    w = Workflow(info)
    _, ks = _txt2img(w, 16)
    quiet = w.add("EmptyLatentImage", 2, 8, title="in-range latent (item 0)", width=16, height=16, batch_size=1)
    batch = w.add("LatentBatch", 3, 0)
    w.link(quiet, 0, batch, "samples1")
    w.link(ks, 0, batch, "samples2")
    vae = w.add("VAELoader", 0, 14, vae_name="tiny_overflow_vae.safetensors")
    policy = w.add("PrecisionSafePolicy", 1, 14, title="Precision Policy (VAE in fp16)", vae_dtype="fp16")
    w.link(vae, 0, policy, "vae")
    core = w.add("VAEDecode", 4, 0, title="core VAE Decode")
    safe = w.add("PrecisionSafeVAEDecode", 4, 8)
    for n in (core, safe):
        w.link(batch, 0, n, "samples")
        w.link(policy, 3, n, "vae")
    for n, row, prefix in ((core, 0, "rescue_core_black"), (safe, 8, "rescue_safe")):
        insp = w.add("PrecisionSafeDtypeInspect", 5, row)
        w.link(n, 0, insp, "value")
        _save(w, insp, 6, row, prefix, scale_to=128)
    return w


def policy_tour(info):
    """PrecisionPolicy feeding txt2img, with DtypeInspect at each stage."""
    w = Workflow(info)
    policy = _checkpoint_through_policy(w, unet_dtype="bf16", vae_dtype="bf16")
    insp_model = w.add("PrecisionSafeDtypeInspect", 2, 0, title="Inspect MODEL")
    w.link(policy, 1, insp_model, "value")
    w.link(policy, 0, insp_model, "context")
    pos, neg = _prompts(w, policy, 2, 2, 5, "a red square on a blue background")
    insp_cond = w.add("PrecisionSafeDtypeInspect", 3, 5, title="Inspect CONDITIONING")
    w.link(pos, 0, insp_cond, "value")
    w.link(policy, 0, insp_cond, "context")
    empty = w.add("EmptyLatentImage", 2, 15, width=64, height=64, batch_size=2)
    ks = w.add("KSampler", 4, 0, seed=0, steps=2, cfg=2.0, sampler_name="euler", scheduler="normal", denoise=1.0)
    w.link(insp_model, 0, ks, "model")
    w.link(insp_cond, 0, ks, "positive")
    w.link(neg, 0, ks, "negative")
    w.link(empty, 0, ks, "latent_image")
    insp_latent = w.add("PrecisionSafeDtypeInspect", 5, 0, title="Inspect LATENT")
    w.link(ks, 0, insp_latent, "value")
    w.link(policy, 0, insp_latent, "context")
    safe = w.add("PrecisionSafeVAEDecode", 6, 0)
    w.link(insp_latent, 0, safe, "samples")
    w.link(policy, 3, safe, "vae")
    w.link(policy, 0, safe, "context")
    insp_img = w.add("PrecisionSafeDtypeInspect", 7, 0, title="Inspect IMAGE")
    w.link(safe, 0, insp_img, "value")
    w.link(policy, 0, insp_img, "context")
    _save(w, insp_img, 8, 0, "policy_tour")
    return w


def _detector_sam_options(w, col, row):
    """Detector Loader, SAM Loader and the Detailer's detection options, stacked in one column."""
    det = w.add("PrecisionSafeDetectorLoader", col, row, model_name="bbox/tiny_shapes_bbox.pt")
    sam = w.add("PrecisionSafeSAMLoader", col, row + 4, model_name="tiny_sam_shapes.pth")
    opts = w.add("PrecisionSafeDetailerDetectionOptions", col, row + 8, crop_factor=1.5, dilation=2)
    return det, sam, opts


def _link_all(w, dst, links):
    for src, slot, name in links:
        w.link(src, slot, dst, name)


def detailer(info):
    """LoadImage -> Detailer (detector + SAM + PrecisionPolicy) -> SaveImage, with the mask saved beside it."""
    w = Workflow(info)
    policy = _checkpoint_through_policy(w)
    pos, neg = _prompts(w, policy, 2, 2, 0, "a shiny geometric shape")
    image = w.add("LoadImage", 0, 16, image="precision_safe_shapes.png")
    det, sam, opts = _detector_sam_options(w, 1, 16)
    d = w.add("PrecisionSafeDetailer", 3, 0, guide_size=64, max_size=128, feather=3, denoise=0.45, steps=4, cfg=3.0,
              seed=7)
    _link_all(w, d, ((image, 0, "image"), (policy, 1, "model"), (pos, 0, "positive"), (neg, 0, "negative"),
                     (policy, 3, "vae"), (det, 0, "detector"), (sam, 0, "sam"), (opts, 0, "detection"),
                     (policy, 0, "context"), (policy, 2, "clip")))
    _save(w, d, 4, 0, "detailer")
    mask = w.add("MaskToImage", 4, 6)
    w.link(d, 1, mask, "mask")
    _save(w, mask, 5, 6, "detailer_mask")
    return w


def detailer_segs(info):
    """SEGS in and out: Detect SEGS -> Detailer (segs in, per-label prompts) -> its SEGS out -> a second Detailer
    pass on the same regions; any SEGS node (Impact Pack's filters, SEGSPaste, DetailerForEach) fits either edge."""
    w = Workflow(info)
    ckpt = w.add("CheckpointLoaderSimple", 0, 0, ckpt_name="tiny_sd15.safetensors")
    pos, neg = _prompts(w, ckpt, 1, 1, 0, "a shiny geometric shape")
    image = w.add("LoadImage", 0, 10, image="precision_safe_shapes.png")
    det, sam, opts = _detector_sam_options(w, 1, 10)
    found = w.add("PrecisionSafeDetectSEGS", 2, 10, title="Detect SEGS (Impact Pack's layout)")
    _link_all(w, found, ((image, 0, "image"), (det, 0, "detector"), (sam, 0, "sam"), (opts, 0, "detection")))
    common = dict(guide_size=64, max_size=128, feather=3, steps=4, cfg=3.0)
    first = w.add("PrecisionSafeDetailer", 3, 0, title="Detailer: SEGS in", denoise=0.45, seed=7,
                  region_prompts="[square] a polished metal square\n[circle] a glass marble", **common)
    second = w.add("PrecisionSafeDetailer", 5, 0, title="Detailer: the first one's SEGS out, second pass",
                   denoise=0.25, seed=8, **common)
    base = ((ckpt, 0, "model"), (pos, 0, "positive"), (neg, 0, "negative"), (ckpt, 2, "vae"))
    _link_all(w, first, base + ((image, 0, "image"), (found, 0, "segs"), (ckpt, 1, "clip")))
    _link_all(w, second, base + ((first, 0, "image"), (first, 5, "segs")))
    w.add_note(2, 0, "SEGS edges take Impact Pack's SEGS as they are: put Impact's SEGS filters, SEGSPaste or "
                     "DetailerForEach on either side of a Detailer, or feed it from Impact's detectors.")
    _save(w, second, 6, 0, "detailer_segs")
    return w


WORKFLOWS = {
    "Detailer - shapes with detector, SAM and a precision policy": detailer,
    "Detailer - SEGS in and out, two passes": detailer_segs,
    "Black-image rescue - SafeVAEDecode vs VAEDecode": black_image_rescue,
    "Policy tour - PrecisionPolicy through txt2img": policy_tour,
}


def build_all(object_info) -> dict[str, dict]:
    return {name: make(object_info).to_json() for name, make in WORKFLOWS.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy", default=COMFY_DIR)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    with ComfyServer(args.comfy) as server:
        built = build_all(server.object_info())
    stale = []
    for name, data in built.items():
        path = os.path.join(ROOT, "workflows", f"{name}.json")
        text = json.dumps(data, indent=1) + "\n"
        if args.check:
            if not os.path.exists(path) or open(path).read() != text:
                stale.append(path)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            print(f"wrote {path}")
    if stale:
        sys.exit(f"out of date (run `make workflows`): {stale}")


if __name__ == "__main__":
    main()
