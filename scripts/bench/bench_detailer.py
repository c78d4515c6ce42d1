"""Detailer benchmark in a real ComfyUI server: batched vs one region at a time, with an A/A noise floor.

Starts ComfyUI with this pack (tests/support/comfy_client.py), generates an image with four regions — three whose
crops are sampled at CROP x CROP and one larger square sampled at its own size (~1.5 CROP), or with --same-size
four sampled at CROP x CROP — and queues Detailer prompts over the HTTP API. Each prompt changes the seed, so the Detailer re-runs while the loaders stay cached.
The Detailer's time per prompt is the gap between its `executing` websocket message and the next one.

Variants: `batched` (max_batch 0: the three same-size regions in one batch), `one_by_one` (max_batch 1),
`batched_again` (the same as batched: the A/A noise floor) and `new_image` (batched, on an image with other noise
around the squares in every prompt: the crops are new each time, so they are encoded again where the other variants
reuse the latents of the same crops). Each is timed blocked (all rounds of one variant in a
row) and interleaved (variants alternating). Printed: medians, the ratio one_by_one / batched against the A/A
ratio, each stage's median from the node's record (detect, sam, crop, encode, sample, decode, paste), and the
share of the Detailer's time spent outside the sampler (everything but `sample`).

CPU (the dev host, tiny models):
    python scripts/bench/bench_detailer.py --comfy .host/ComfyUI --crop 96 --steps 4 --rounds 3
GPU (ComfyUI's own device choice, a full-size SD1.5 checkpoint in models/checkpoints):
    python scripts/bench/bench_detailer.py --comfy COMFYUI_DIR --cuda --ckpt NAME.safetensors --crop 512 \\
        --steps 20 --rounds 5 --json out/bench_detailer.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "support"))
from comfy_client import ComfyServer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VARIANTS = {"batched": 0, "one_by_one": 1, "batched_again": 0, "new_image": 0}
STAGES = ("detect", "sam", "crop", "encode", "sample", "decode", "paste")


def layout(crop: int, same_size: bool):
    """The image size and four square boxes: three of side crop/2 (crop_factor 2 gives crop x crop crops) and one
    of side 0.75 crop (a 1.5 crop crop, larger than max_size = crop: sampled at its own size), or four of side
    crop/2."""
    w, h = int(3.5 * crop), 3 * crop
    boxes = []
    fourth = (1.75, 2.15, 0.5 if same_size else 0.75)
    for cx, cy, side in ((0.6, 0.6, 0.5), (1.75, 0.6, 0.5), (2.9, 0.6, 0.5), fourth):
        half = side * crop / 2
        boxes.append((round(cx * crop - half), round(cy * crop - half), round(cx * crop + half), round(cy * crop + half)))
    return (h, w), boxes


def write_inputs(folder: str, crop: int, same_size: bool, noise: int = 0) -> tuple[str, str]:
    """The image (grey with noise drawn from seed `noise`, the four squares) and the squares' mask, as PNGs."""
    (h, w), boxes = layout(crop, same_size)
    rng = np.random.default_rng(noise)
    image = np.full((h, w, 3), 0.45, np.float32) + rng.normal(0, 0.03, (h, w, 3)).astype(np.float32)
    mask = np.zeros((h, w, 3), np.float32)
    for (x0, y0, x1, y1), colour in zip(boxes, ((0.9, 0.2, 0.2), (0.2, 0.9, 0.2), (0.2, 0.2, 0.9), (0.9, 0.9, 0.2))):
        image[y0:y1, x0:x1] = colour
        mask[y0:y1, x0:x1] = 1
    names = (f"bench_detailer_image_{noise}.png", "bench_detailer_mask.png")
    for name, arr in zip(names, (image, mask)):
        Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).save(os.path.join(folder, name))
    return names


def prompt(args, image_name, mask_name, max_batch: int, seed: int) -> dict:
    guide = -(-int(1.25 * args.crop) // 8) * 8
    p = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": args.ckpt}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a detailed face", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "image": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "opts": {"class_type": "PrecisionSafeDetailerDetectionOptions", "inputs": {
            "threshold": 0.3, "labels": "", "dilation": 0, "crop_factor": 2.0, "drop_size": 4, "min_area_ratio": 0.0,
            "max_area_ratio": 1.0, "top_k": 0, "sort_by": "left-right"}},
        "detailer": {"class_type": "PrecisionSafeDetailer", "inputs": {
            "image": ["image", 0], "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
            "vae": ["ckpt", 2], "detection": ["opts", 0], "guide_size": guide, "guide_size_for": "crop_region",
            "max_size": args.crop, "force_inpaint": True, "feather": 5, "noise_mask": True, "noise_mask_feather": 0,
            "inpaint_model": False, "denoise": 0.5, "steps": args.steps, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "normal", "seed": seed, "cycles": 1, "max_batch": max_batch, "tiled_vae": "off",
            "tile_size": 512}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["detailer", 0]}},
    }
    if args.source == "mask":
        p["mask_image"] = {"class_type": "LoadImage", "inputs": {"image": mask_name}}
        p["mask"] = {"class_type": "ImageToMask", "inputs": {"image": ["mask_image", 0], "channel": "red"}}
        p["detailer"]["inputs"]["mask"] = ["mask", 0]
    else:
        p["det"] = {"class_type": "PrecisionSafeDetectorLoader", "inputs": {"model_name": args.detector}}
        p["detailer"]["inputs"]["detector"] = ["det", 0]
        if args.sam:
            p["sam"] = {"class_type": "PrecisionSafeSAMLoader", "inputs": {"model_name": args.sam}}
            p["detailer"]["inputs"]["sam"] = ["sam", 0]
    return p


class Bench:
    def __init__(self, server, args, folder):
        self.server, self.args, self.folder = server, args, folder
        self.names = write_inputs(folder, args.crop, args.same_size)
        self.seed = 1000

    def once(self, variant: str) -> dict:
        self.seed += 1
        names = self.names
        if variant == "new_image":  # other noise around the squares: every crop is new, so it is encoded again
            names = write_inputs(self.folder, self.args.crop, self.args.same_size, noise=self.seed)
        run = self.server.run(prompt(self.args, *names, VARIANTS[variant], self.seed), timeout=3600)
        if not run.success:
            raise RuntimeError(f"{variant} prompt failed: {run.error or run.rejected}")
        record = run.precision_records()["detailer"]
        batches = 4 if VARIANTS[variant] == 1 else 1 if self.args.same_size else 2
        if record["notes"][-1].split(":")[0] != f"batch {batches}/{batches}":
            raise RuntimeError(f"{variant}: expected 4 regions in {batches} batch(es), got {record['notes']}")
        return {"seconds": run.node_seconds()["detailer"], "stages": record["stages"], "notes": record["notes"]}

    def blocked(self, rounds: int) -> dict:
        return {v: [self.once(v) for _ in range(rounds)] for v in VARIANTS}

    def interleaved(self, rounds: int) -> dict:
        out = {v: [] for v in VARIANTS}
        names = list(VARIANTS)
        for i in range(rounds):
            for v in names[i % len(names):] + names[:i % len(names)]:
                out[v].append(self.once(v))
        return out


def summary(runs: dict) -> dict:
    med = {v: statistics.median(r["seconds"] for r in rs) for v, rs in runs.items()}
    stages = {v: {s: statistics.median(r["stages"][s] for r in rs) for s in STAGES} for v, rs in runs.items()}
    outside = {v: 1 - stages[v]["sample"] / med[v] for v in runs}
    for v in runs:  # the node's time in no stage: model clones, moving the image, building the outputs
        stages[v]["other"] = max(0.0, med[v] - sum(stages[v][s] for s in STAGES))
    return {
        "median_s": {v: round(t, 4) for v, t in med.items()},
        "ratio_batched_over_one_by_one": round(med["batched"] / med["one_by_one"], 3),
        "noise_floor_batched_again_over_batched": round(med["batched_again"] / med["batched"], 3),
        "stages_median_s": {v: {s: round(t, 4) for s, t in st.items()} for v, st in stages.items()},
        "share_outside_sampler": {v: round(x, 3) for v, x in outside.items()},
        "batches": {v: rs[0]["notes"] for v, rs in runs.items()},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfy", default=os.path.join(ROOT, ".host", "ComfyUI"))
    ap.add_argument("--cuda", action="store_true", help="run the server on the GPU (default: --cpu)")
    ap.add_argument("--ckpt", default="tiny_sd15.safetensors", help="a checkpoint in models/checkpoints")
    ap.add_argument("--crop", type=int, default=96, help="crop size in pixels (a multiple of 8)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5, help="prompts per variant per mode")
    ap.add_argument("--same-size", action="store_true", help="four regions of one size (one batch) instead of 3 + 1")
    ap.add_argument("--source", choices=("mask", "detector"), default="mask",
                    help="regions from a MASK of the four squares (exact sizes) or the tiny shapes detector")
    ap.add_argument("--detector", default="bbox/tiny_shapes_bbox.pt")
    ap.add_argument("--sam", default="", help="a SAM in models/sams to refine the masks (detector source)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.crop % 8:
        ap.error("--crop must be a multiple of 8")

    inputs = tempfile.mkdtemp(prefix="bench_detailer_in_")
    extra = ["--input-directory", inputs]
    with ComfyServer(args.comfy, extra_args=extra, cpu=not args.cuda) as server:
        stats = server.get("/system_stats")
        bench = Bench(server, args, inputs)
        for v in VARIANTS:  # warm-up: models loaded, first-call costs paid
            bench.once(v)
        results = {"blocked": summary(bench.blocked(args.rounds)),
                   "interleaved": summary(bench.interleaved(args.rounds))}
    results["setup"] = {k: v for k, v in vars(args).items() if k != "json"} | {
        "devices": [d.get("name") for d in stats.get("devices", [])], "layout": layout(args.crop, args.same_size)}
    for mode in ("blocked", "interleaved"):
        r = results[mode]
        print(f"\n{mode}: median Detailer seconds per prompt {r['median_s']}")
        print(f"  batched / one_by_one = {r['ratio_batched_over_one_by_one']} (goal <= 0.4 on the GPU); "
              f"A/A batched_again / batched = {r['noise_floor_batched_again_over_batched']}")
        print(f"  share of the Detailer's time outside the sampler: {r['share_outside_sampler']} (goal <= 0.15; "
              "new_image: every crop encoded again)")
        for v, st in r["stages_median_s"].items():
            print(f"  {v:14s} " + "  ".join(f"{s} {t * 1000:.1f} ms" for s, t in st.items()))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
