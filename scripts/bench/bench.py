"""`make bench`: CPU benchmarks printed side by side from one run (medians of interleaved repeats, and ratios).

1. SafeVAEDecode vs core VAEDecode, same healthy VAE and latent (goal: ratio <= 1.03).
2. Overflowing fp16 VAE: SafeVAEDecode (fp16, finds NaN, retries the item in bf16) vs core VAEDecode of the same
   VAE loaded in fp32 from the start.
3. Detailer with 4 same-size regions: batched (one sampling batch) vs one by one (max_batch=1) (goal <= 0.8).
Each node runs through its real entry point (core node class / V3 node class with its hidden inputs).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "support"))
from comfy_client import CHECKPOINT, COMFY_DIR, OVERFLOW_VAE, ensure_models, import_comfy  # noqa: E402


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def compare(name, base_name, base, new_name, new, repeats, goal=None):
    base(), new()  # warm-up: model load, allocator
    tb, tn = [], []
    for _ in range(repeats):  # interleaved, so drift hits both sides alike
        tb += timed(base, 1)
        tn += timed(new, 1)
    mb, mn = statistics.median(tb), statistics.median(tn)
    line = f"{name:<44} {base_name} {mb * 1000:8.1f} ms | {new_name} {mn * 1000:8.1f} ms | ratio {mn / mb:5.3f}"
    print(line + (f"  (goal <= {goal})" if goal else ""))
    return mn / mb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy", default=COMFY_DIR)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    args.comfy = os.path.abspath(args.comfy)
    ensure_models(args.comfy)
    nodes = import_comfy(args.comfy)
    import torch
    import comfy.sd
    import comfy.utils

    def node_class(node_id):
        return nodes.NODE_CLASS_MAPPINGS[node_id]

    core_decode = nodes.VAEDecode()
    safe_cls = node_class("PrecisionSafeVAEDecode").PREPARE_CLASS_CLONE({"unique_id": "bench"})
    policy_cls = node_class("PrecisionSafePolicy").PREPARE_CLASS_CLONE({"unique_id": "bench"})

    ckpt = nodes.CheckpointLoaderSimple().load_checkpoint(CHECKPOINT)
    vae = ckpt[2]
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; medians of {args.repeats} interleaved runs")
    latent = {"samples": torch.randn(1, 4, 32, 32)}
    compare("healthy VAE, 1x4x32x32 latent (256 px), fp32", "VAEDecode", lambda: core_decode.decode(vae, latent),
            "SafeVAEDecode", lambda: safe_cls.execute(samples=latent, vae=vae), args.repeats, goal=1.03)

    sd = comfy.utils.load_torch_file(os.path.join(args.comfy, "models", "vae", OVERFLOW_VAE))
    vae32 = comfy.sd.VAE(sd=sd, dtype=torch.float32)
    fp16_vae = policy_cls.execute(unet_dtype="auto", vae_dtype="fp16", text_encoder_dtype="auto", detector_dtype="auto",
                                  sam_dtype="auto", intermediate_dtype="auto", on_mismatch="cast",
                                  on_nonfinite="retry", vae=vae32).args[3]
    hot = {"samples": torch.randn(1, 4, 2, 2) * 100}  # fp16 on a CPU is ~100x slower: keep it tiny
    out = safe_cls.execute(samples=hot, vae=fp16_vae)
    assert out.ui["precision_safe"][0]["retries"], "expected the overflow to be retried"
    compare("overflow VAE, 1x4x2x2 latent: retry vs fp32", "fp32 VAEDecode", lambda: core_decode.decode(vae32, hot),
            "SafeVAEDecode fp16->bf16", lambda: safe_cls.execute(samples=hot, vae=fp16_vae), args.repeats)

    detailer_cls = node_class("PrecisionSafeDetailer").PREPARE_CLASS_CLONE({"unique_id": "bench"})
    loader = node_class("PrecisionSafeDetectorLoader").PREPARE_CLASS_CLONE({"unique_id": "bench"})
    detector = loader.execute(model_name="bbox/tiny_shapes_bbox.pt").args[0]
    clip_encode = nodes.CLIPTextEncode()
    pos, neg = clip_encode.encode(ckpt[1], "a shape")[0], clip_encode.encode(ckpt[1], "")[0]
    image = torch.full((1, 128, 128, 3), 0.3)
    for x, y in ((10, 10), (80, 12), (12, 84), (86, 86)):  # four squares of one size: four regions of one size
        image[0, y:y + 24, x:x + 24] = torch.tensor([0.9, 0.2, 0.2])
    detection = node_class("PrecisionSafeDetailerDetectionOptions").PREPARE_CLASS_CLONE({"unique_id": "bench"})
    opts = detection.execute(threshold=0.5, labels="", dilation=0, crop_factor=1.5, drop_size=4, min_area_ratio=0.0,
                             max_area_ratio=1.0, top_k=0, sort_by="left-right").args[0]
    kw = dict(image=image, model=ckpt[0], positive=pos, negative=neg, vae=vae, detector=detector, detection=opts,
              guide_size=64, guide_size_for="bbox", max_size=64, force_inpaint=True, feather=2, noise_mask=True,
              noise_mask_feather=0, inpaint_model=False, denoise=0.5, steps=4, cfg=2.0, sampler_name="euler",
              scheduler="normal", seed=1, cycles=1, tiled_vae="off", tile_size=512)
    notes = detailer_cls.execute(**kw, max_batch=0).ui["precision_safe"][0]["notes"]
    assert notes == ["batch 1/1: 4 region(s) at 64x64"], notes
    compare("Detailer, 4 same-size regions, 4 steps", "one by one", lambda: detailer_cls.execute(**kw, max_batch=1),
            "batched", lambda: detailer_cls.execute(**kw, max_batch=0), max(3, args.repeats // 3), goal=0.8)


if __name__ == "__main__":
    main()
