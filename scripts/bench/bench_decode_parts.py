"""Where SafeVAEDecode's time goes beside core VAEDecode, in this process (no server): both nodes through their real
entry points on one latent, interleaved, then the steps SafeVAEDecode adds or moves, timed alone on the same tensors.

    python scripts/bench/bench_decode_parts.py [--cuda] [--ckpt NAME] [--size 1024] [--repeats 15] [--threads 2,0]

`--threads` lists torch CPU thread counts to measure under (0: the machine's default); ComfyUI's IMAGE lives on the
CPU, so the CPU-side passes over it depend on them. Prints medians in ms and ratios, with core vs core (A/A).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "support"))
from comfy_client import CHECKPOINT, COMFY_DIR, ensure_models, import_comfy, pack_module  # noqa: E402


def median_ms(fn, repeats, sync):
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def interleaved_ms(fns: dict, repeats, sync) -> dict:
    for fn in fns.values():  # warm-up: model load, allocator
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy", default=COMFY_DIR)
    ap.add_argument("--cuda", action="store_true")
    ap.add_argument("--ckpt", default=CHECKPOINT)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", default="0")
    args = ap.parse_args()
    comfy_dir = os.path.abspath(args.comfy)
    ensure_models(comfy_dir)
    nodes = import_comfy(comfy_dir, cpu=not args.cuda)
    import torch
    # the pack's modules as ComfyUI loaded them
    attach, copies, checks, finite, records, resolver, report = (pack_module(nodes, m) for m in (
        "host.attach", "host.copies", "host.checks", "precision.finite", "host.records", "host.facts",
        "precision.report"))

    vae = nodes.CheckpointLoaderSimple().load_checkpoint(args.ckpt)[2]
    core = nodes.VAEDecode()
    safe = nodes.NODE_CLASS_MAPPINGS["PrecisionSafeVAEDecode"].PREPARE_CLASS_CLONE({"unique_id": "parts"})
    torch.manual_seed(0)
    latent = {"samples": torch.randn(1, 4, args.size // 8, args.size // 8)}
    sync = torch.cuda.synchronize if args.cuda else (lambda: None)
    default_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, VAE on {vae.device} at {vae.vae_dtype}, IMAGE on {vae.output_device}, "
          f"{args.size}x{args.size}, medians of {args.repeats}", flush=True)

    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        for threads in [int(t) or default_threads for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            nodes_ms = interleaved_ms({
                "core": lambda: core.decode(vae, latent),
                "safe": lambda: safe.execute(samples=latent, vae=vae),
                "core_again": lambda: core.decode(vae, latent),
            }, args.repeats, sync)
            image = core.decode(vae, latent)[0]
            ctx, _ = attach.find_context(None, vae)
            record = report.PrecisionRecord(node="parts")
            parts = {
                "check_latent": lambda: checks.check_latent("parts", latent["samples"], vae.latent_channels),
                "find_context": lambda: attach.find_context(None, vae),
                "resolution vae+intermediate": lambda: (resolver.resolution(ctx, "vae", vae),
                                                        resolver.resolution(ctx, "intermediate")),
                "nonfinite_items(IMAGE on the CPU)": lambda: finite.nonfinite_items(image),
                "vae_at_dtype (same dtype)": lambda: copies.vae_at_dtype(vae, vae.vae_dtype),
                "ui_payload": lambda: records.ui_payload(record),
            }
            if args.cuda:  # core's time = the decoder on the GPU + converting and clamping its output on the CPU
                on_gpu = latent["samples"].to(vae.device, vae.vae_dtype)
                parts["decoder alone, on the GPU"] = lambda: vae.first_stage_model.decode(on_gpu)
                image_on_gpu = image.to(vae.device)
                parts["nonfinite_items(IMAGE on the GPU)"] = lambda: finite.nonfinite_items(image_on_gpu)
                parts["IMAGE GPU -> CPU"] = lambda: image_on_gpu.to("cpu")
            parts_ms = {name: median_ms(fn, args.repeats, sync) for name, fn in parts.items()}
            print(f"\n{threads} CPU threads")
            print(f"  core VAEDecode {nodes_ms['core']:9.2f} ms | SafeVAEDecode {nodes_ms['safe']:9.2f} ms | "
                  f"ratio {nodes_ms['safe'] / nodes_ms['core']:.4f} | A/A {nodes_ms['core_again'] / nodes_ms['core']:.4f}"
                  f" | difference {nodes_ms['safe'] - nodes_ms['core']:+.2f} ms")
            for name, ms in parts_ms.items():
                print(f"  {name:<30} {ms:8.3f} ms")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
