"""What PrecisionPolicy's enforce_downstream costs.

1. Per edge, in-process: conforming one value whose dtype already agrees with the context (the common case), per
   kind: an IMAGE, a LATENT, a CONDITIONING; and a MODEL/VAE/CLIP (a clone each time: the price of a model-like
   input). Then the on-prompt rewrite itself, once per POST.
2. Per prompt, inside a real ComfyUI server: the policy's MODEL through a chain of cheap core nodes (RescaleCFG), with
   enforce_downstream off and on, prompts interleaved, the first node's input changed every prompt so every node
   after it runs again. Printed: medians, the on/off ratio beside the
   off/off ratio (the same graph timed twice: the noise floor), and the difference per wrapped node.

Usage: python scripts/bench/bench_enforce.py [--comfy COMFYUI_DIR] [--n 12] [--chain 10] [--skip-edge] [--cuda]
(part 1 runs ComfyUI in-process with --cpu; part 2's server runs on the GPU with --cuda, else with --cpu.)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import timeit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))

POLICY = dict(unet_dtype="auto", vae_dtype="auto", text_encoder_dtype="auto", detector_dtype="auto",
              sam_dtype="auto", intermediate_dtype="auto", on_mismatch="cast", on_nonfinite="retry")


def per_edge(comfy_dir: str, chain: int) -> None:
    from comfy_client import ensure_models, import_comfy, pack_module
    import torch
    ensure_models(comfy_dir)
    nodes = import_comfy(comfy_dir)
    cv, ctx_mod, report, guard, enforce = (pack_module(nodes, m) for m in (
        "enforce.conform_value", "precision.context", "precision.report", "host.dtype_guard", "host.enforcement"))
    import comfy.sd
    import folder_paths
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(
        folder_paths.get_full_path("checkpoints", "tiny_sd15.safetensors"), output_vae=True, output_clip=True)[:3]
    ctx = ctx_mod.PrecisionContext()

    def step():
        return cv.Step("Node #1", "x", "Precision Policy #2", ctx, report.PrecisionRecord("Node #1"),
                       guard.GuardInfo("enforced by Precision Policy #2", node="Node #1"))
    values = {
        "IMAGE": torch.rand(1, 512, 512, 3),
        "LATENT": {"samples": torch.rand(1, 4, 64, 64)},
        "CONDITIONING": [[torch.rand(1, 77, 768), {"pooled_output": torch.rand(1, 768)}]],
        "MODEL": model, "VAE": vae, "CLIP": clip,
    }
    print("per edge, dtypes already agree (median of 7 timings):")
    for kind, value in values.items():
        number = 2000 if kind in ("IMAGE", "LATENT", "CONDITIONING") else 50
        runs = timeit.repeat(lambda: cv.conform_value(kind, value, step()), number=number, repeat=7)
        print(f"  {kind:<13} {statistics.median(runs) / number * 1e6:9.1f} us per input")
    graph = prompt(0, True, chain)
    runs = timeit.repeat(lambda: enforce.prepare({"prompt": graph}), number=20, repeat=7)
    print(f"the on-prompt rewrite of the {len(graph)}-node prompt below (ComfyUI's validation of it included): "
          f"{statistics.median(runs) / 20 * 1000:.2f} ms per POST")


def prompt(i: int, enforce: bool, chain: int) -> dict:
    """The policy's MODEL through `chain` RescaleCFG nodes (cheap: each clones the MODEL and sets a function), the
    first one's multiplier changed every prompt so every node after it runs again, then Dtype Inspect (an output
    node of the pack, not wrapped). Cheap nodes, so the price per wrapped node is not buried under sampling."""
    p = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "PrecisionSafePolicy", "inputs": {**POLICY, "model": ["1", 0],
                                                              "enforce_downstream": enforce}},
    }
    last = ["2", 1]
    for k in range(chain):
        p[str(10 + k)] = {"class_type": "RescaleCFG", "inputs": {
            "model": last, "multiplier": round((i % 9000) * 1e-4, 4) if k == 0 else 0.7}}
        last = [str(10 + k), 0]
    p["3"] = {"class_type": "PrecisionSafeDtypeInspect", "inputs": {"value": last, "strict": False}}
    return p


def per_prompt(comfy_dir: str, n: int, chain: int, cuda: bool) -> None:
    from comfy_client import ComfyServer
    wrapped = chain  # the RescaleCFG nodes
    times = {"off": [], "off again": [], "on": []}
    with ComfyServer(comfy_dir, cpu=not cuda) as server:
        i = 0
        for variant in times:  # warm-up: loaders, first model load, first rewrite
            i += 1
            assert server.run(prompt(i, variant == "on", chain)).success
        for _ in range(n):
            for variant in times:  # interleaved: drift hits every variant alike
                i += 1
                start = time.perf_counter()
                run = server.run(prompt(i, variant == "on", chain))
                times[variant].append(time.perf_counter() - start)
                assert run.success, run.error
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"per prompt in a real server ({wrapped} nodes wrapped when on, {n} prompts each, interleaved; median of "
          "POST to the end of the websocket run, history fetched):")
    for k, v in med.items():
        print(f"  enforce {k:<10} {v * 1000:8.1f} ms")
    print(f"  ratio on/off {med['on'] / med['off']:.3f}   A/A off again/off {med['off again'] / med['off']:.3f}")
    print(f"  difference per wrapped node: {(med['on'] - med['off']) / wrapped * 1000:.2f} ms "
          f"(A/A difference per node: {(med['off again'] - med['off']) / wrapped * 1000:.2f} ms)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy", default=os.path.join(ROOT, ".host", "ComfyUI"))
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--chain", type=int, default=10)
    ap.add_argument("--skip-edge", action="store_true")
    ap.add_argument("--cuda", action="store_true", help="run part 2's server on the GPU")
    args = ap.parse_args()
    if not args.skip_edge:
        per_edge(args.comfy, args.chain)
    per_prompt(args.comfy, args.n, args.chain, args.cuda)


if __name__ == "__main__":
    main()
