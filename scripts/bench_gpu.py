"""GPU benchmarks of the pack's VAE paths (and optionally the Detailer's batching), on ComfyUI's own classes.

1. Full-size SD VAE decoder (the tiny checkpoint's VAE: SD's real VAE config, random weights) at 1024x1024
   (latent 1x4x128x128) in bf16: safe_decode (SafeVAEDecode's path) vs core `vae.decode` (VAEDecode's path),
   interleaved in one run, medians + ratio; peak GPU memory of each.
2. Overflow-prone VAE (same VAE, post_quant_conv.weight x 1e5), same latent size, latent ~ N(0, 5^2):
   - bf16 directly (what `auto` does on a bf16 GPU),
   - the fp16 probe's first run (fingerprint + probe, cold) then the decode at the decided dtype,
   - later runs with the cached verdict,
   - always fp32,
   - fp16 + per-item retry with no probe (the decode the verdict saves),
   time and peak memory (torch.cuda.max_memory_allocated above what was allocated before).
3. (--detailer) Detailer re-sample of 4 regions at 512x512, batched vs one by one, with the tiny SD1.5-shaped
   UNet (one UNet level, full-size SD VAE).

Usage (GPU machine, repo root): python3 scripts/bench_gpu.py --comfy COMFYUI_DIR [--json out.json] [--detailer]
Models: scripts/make_tiny_models.py COMFYUI_DIR (run first; scripts/gpu_run.sh does both).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_pack():
    """The pack as package `precision_safe` without running its __init__ (which looks for comfy_api)."""
    if "precision_safe" not in sys.modules:
        pkg = types.ModuleType("precision_safe")
        pkg.__path__ = [ROOT]
        sys.modules["precision_safe"] = pkg


def sync():
    import torch
    torch.cuda.synchronize()


def timed(fn):
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out


def peak_mib(fn):
    """Peak allocated GPU memory during fn() above what was allocated before it, in MiB."""
    import torch
    sync()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    sync()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def interleaved(fns: dict, n: int, warmup: int) -> dict:
    """Median seconds of each fn over n rounds, the order rotated every round (one interleaved run)."""
    names = list(fns)
    for _ in range(warmup):
        for k in names:
            timed(fns[k])
    times = {k: [] for k in names}
    for i in range(n):
        order = names[i % len(names):] + names[:i % len(names)]
        for k in order:
            times[k].append(timed(fns[k])[0])
    return {k: statistics.median(v) for k, v in times.items()}


def ms(s):
    return round(s * 1000, 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy", required=True)
    ap.add_argument("--json", default="")
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--size", type=int, default=1024, help="image side; latent is size/8")
    ap.add_argument("--detailer", action="store_true")
    args = ap.parse_args()

    import_pack()
    sys.path.insert(0, os.path.abspath(args.comfy))
    import torch
    import comfy.sd
    import comfy.utils

    from precision_safe.nodes.host import fp16_verdict as fv
    from precision_safe.nodes.host.vae_decode import safe_decode
    from precision_safe.nodes.precision import fp16_probe
    from precision_safe.nodes.precision.context import PrecisionContext
    from precision_safe.nodes.precision.finite import nonfinite_items
    from precision_safe.nodes.precision.report import PrecisionRecord

    torch.backends.cudnn.benchmark = False
    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "size": args.size, "runs": args.runs, "warmup": args.warmup}
    print(json.dumps(res))
    models = os.path.join(args.comfy, "models")
    ckpt_sd = comfy.utils.load_torch_file(os.path.join(models, "checkpoints", "tiny_sd15.safetensors"))
    vae_sd = {k[len("first_stage_model."):]: v.float() for k, v in ckpt_sd.items() if k.startswith("first_stage_model.")}
    del ckpt_sd
    lat = args.size // 8
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, lat, lat, generator=g) * 5.0

    # ---- 1. SafeVAEDecode path vs core decode, plain VAE, bf16
    vae = comfy.sd.VAE(sd=vae_sd, dtype=torch.bfloat16)
    ctx = PrecisionContext(vae="bf16")
    core = lambda: vae.decode(latent)  # noqa: E731
    safe = lambda: safe_decode(vae, latent, ctx, PrecisionRecord("SafeVAEDecode"))  # noqa: E731
    # core twice: the spread between the two core columns is the run's noise floor
    med = interleaved({"core": core, "safe": safe, "core_again": lambda: vae.decode(latent)}, args.runs, args.warmup)
    r1 = {"core_vae_decode_ms": ms(med["core"]), "safe_decode_ms": ms(med["safe"]),
          "core_again_ms": ms(med["core_again"]),
          "ratio_safe_over_core": round(med["safe"] / med["core"], 4),
          "ratio_core_again_over_core": round(med["core_again"] / med["core"], 4),
          "peak_core_mib": round(peak_mib(core), 1), "peak_safe_mib": round(peak_mib(safe), 1)}
    out_cpu = core()
    out_gpu = out_cpu.cuda()
    r1["nonfinite_check_cpu_output_ms"] = ms(statistics.median(timed(lambda: nonfinite_items(out_cpu))[0] for _ in range(21)))
    r1["nonfinite_check_on_gpu_ms"] = ms(statistics.median(timed(lambda: nonfinite_items(out_gpu))[0] for _ in range(21)))
    r1["torch_threads"] = torch.get_num_threads()
    res["plain_vae_bf16"] = r1
    print("1.", json.dumps(r1), flush=True)

    # ---- 2. overflow-prone VAE
    ovf_sd = comfy.utils.load_torch_file(os.path.join(models, "vae", "tiny_overflow_vae.safetensors"))
    ovf = comfy.sd.VAE(sd=ovf_sd, dtype=torch.float32)  # as loaded: fp32 weights, cast copies made per dtype
    fv.clear_caches()
    fp16_probe._FINGERPRINTS.clear()

    def decided():
        v = fv.vae_fp16_verdict(ovf)
        # on this GPU an unsafe verdict decodes in bf16 (fp32 on GPUs without bf16); a safe one could use fp16
        dtype = torch.float16 if v.safe else torch.bfloat16
        return safe_decode(ovf, latent, PrecisionContext(vae={torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]),
                           PrecisionRecord("SafeVAEDecode")), v

    bf16_decode = lambda: safe_decode(ovf, latent, PrecisionContext(vae="bf16"), PrecisionRecord("x"))  # noqa: E731
    for _ in range(args.warmup):
        bf16_decode()  # the bf16 cast copy exists and is loaded: what follows times the probe alone
    base = torch.cuda.memory_allocated()
    t_fp, _ = timed(lambda: fp16_probe.fingerprint(ovf.first_stage_model))
    fp16_probe._FINGERPRINTS.clear()
    torch.cuda.reset_peak_memory_stats()
    t_cold, verdict = timed(lambda: fv.vae_fp16_verdict(ovf))  # fingerprint + fp16 cast copy + load + probe
    peak_cold = (torch.cuda.max_memory_allocated() - base) / 2**20
    kept = (torch.cuda.memory_allocated() - base) / 2**20
    fv.clear_caches()
    fp16_probe._FINGERPRINTS.clear()
    t_probe, _ = timed(lambda: fv.vae_fp16_verdict(ovf))  # fp16 copy already there: fingerprint + probe
    t_first, (out_first, _) = timed(decided)  # cached verdict now, but first decide() of the object
    r2 = {"verdict": verdict.describe(), "fingerprint_cold_ms": ms(t_fp),
          "verdict_cold_ms (fp16 copy + probe)": ms(t_cold), "verdict_probe_only_ms": ms(t_probe),
          "verdict_cold_peak_mib": round(peak_cold, 1), "fp16_copy_kept_on_gpu_mib": round(kept, 1),
          "first_run_with_probe_ms (cold verdict + bf16 decode)": ms(t_cold + t_first),
          "first_run_finite": nonfinite_items(out_first) == [], "probes_run": fv.CACHE.probes}
    t_lookup = statistics.median(timed(lambda: fv.vae_fp16_verdict(ovf))[0] for _ in range(11))
    r2["cached_verdict_lookup_ms"] = round(t_lookup * 1000, 3)
    t_fpc = statistics.median(timed(lambda: fp16_probe.fingerprint(ovf.first_stage_model))[0] for _ in range(11))
    r2["fingerprint_cached_check_ms"] = round(t_fpc * 1000, 3)
    rec_retry = PrecisionRecord("SafeVAEDecode")
    paths = {
        "bf16_direct": lambda: safe_decode(ovf, latent, PrecisionContext(vae="bf16"), PrecisionRecord("x")),
        "cached_verdict": lambda: decided()[0],
        "fp32_always": lambda: safe_decode(ovf, latent, PrecisionContext(vae="fp32"), PrecisionRecord("x")),
        "fp16_then_retry": lambda: safe_decode(ovf, latent, PrecisionContext(vae="fp16"), rec_retry),
    }
    med = interleaved(paths, args.runs, args.warmup)
    for k, v in med.items():
        r2[f"{k}_ms"] = ms(v)
    r2["fp16_then_retry_record"] = rec_retry.retries[:1]
    for k, fn in paths.items():
        r2[f"{k}_peak_mib"] = round(peak_mib(fn), 1)
    r2["probes_run_total"] = fv.CACHE.probes
    res["overflow_vae"] = r2
    print("2.", json.dumps(r2), flush=True)

    # ---- 3. optional: Detailer batching
    if args.detailer:
        from precision_safe.nodes.host.attach import model_with_policy
        from precision_safe.nodes.host.region_sampling import SamplingOptions, resample
        from precision_safe.nodes.precision.context import DEFAULT
        model, clip, cvae, _ = comfy.sd.load_checkpoint_guess_config(
            os.path.join(models, "checkpoints", "tiny_sd15.safetensors"), output_vae=True, output_clip=True)
        m, _ = model_with_policy(model, DEFAULT)
        pos = clip.encode_from_tokens_scheduled(clip.tokenize("a shape"))
        neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        opts = SamplingOptions(steps=4, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=0.5, noise_mask=True)
        pixels = torch.rand(4, 512, 512, 3, generator=g)
        masks = torch.zeros(4, 512, 512)
        masks[:, 128:384, 128:384] = 1
        seeds = [1, 2, 3, 4]
        batched = lambda: resample(m, pos, neg, cvae, pixels, masks, seeds, opts, DEFAULT, PrecisionRecord("d"))  # noqa
        one = lambda: [resample(m, pos, neg, cvae, pixels[i:i + 1], masks[i:i + 1], seeds[i:i + 1], opts, DEFAULT,  # noqa
                                PrecisionRecord("d")) for i in range(4)]
        med = interleaved({"batched": batched, "one_by_one": one}, max(3, args.runs // 3), 1)
        r3 = {"batched_ms": ms(med["batched"]), "one_by_one_ms": ms(med["one_by_one"]),
              "speedup": round(med["one_by_one"] / med["batched"], 3),
              "peak_batched_mib": round(peak_mib(batched), 1), "peak_one_by_one_mib": round(peak_mib(one), 1)}
        res["detailer_4x512"] = r3
        print("3.", json.dumps(r3), flush=True)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    import torch
    with torch.inference_mode():  # as ComfyUI's executor runs nodes (no autograd state kept)
        main()
