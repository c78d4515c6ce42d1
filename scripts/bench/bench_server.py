"""Per-node benchmarks inside a real ComfyUI server with the pack installed (CPU or CUDA).

Each time is one node's, read from the websocket: the gap between its `executing` message and the next one. One input
changes per prompt (a seed, a latent multiplier, a toggle) so the timed node re-runs while loaders stay cached. Every
ratio is printed beside an A/A ratio: the baseline timed twice in the same run.

Sections (--sections, default all):
  ksampler  KSampler's MODEL from: the loader (stock) / PrecisionPolicy auto / PrecisionPolicy unet=fp16 /
            PrecisionGuard, each blocked (warm-up, then n prompts), stock twice for the A/A floor.
  share     stock and policy-auto MODELs alternating prompt by prompt, and both branches in one prompt, against the
            same with the stock MODEL twice.
  bf16      PrecisionPolicy unet=bf16 (weights converted once) vs a second server started with --bf16-unet (stock
            loaded at bf16); GPU memory from /system_stats after each.
  decode    SafeVAEDecode vs core VAEDecode at --decode-size (default 1024), blocked and interleaved, core twice
            for A/A.
  inspect   Dtype Inspect on the checkpoint's MODEL, and on the tiny checkpoint's (flat in model size).
  txt2img   the default txt2img prompt (loader -> KSampler -> VAEDecode -> SaveImage) as a whole, from its
            execution_start to its execution_success: stock (no pack node) vs the same through a Precision Policy
            at its defaults (auto, enforce_downstream on: every link into KSampler, VAEDecode and SaveImage gets a
            conform step), interleaved, stock twice for the A/A floor. Twice: on this server (ComfyUI's classic
            cache keeps only the last prompt's outputs, so interleaving re-runs every pack node and every conform
            step in each policy prompt: the cold cost) and on a second one started with --cache-lru 64 (each graph
            keeps its cached nodes, as when a user queues the same graph again with a new seed: only KSampler and
            what follows re-run). Medians per variant and the median of the per-round ratios (drift inside a round
            is small: the GPU's speed moves between rounds).

Usage: python scripts/bench/bench_server.py --comfy COMFYUI_DIR [--cuda] [--ckpt NAME] [--size 512] [--steps 20] [--n 6]
                                      [--json FILE] [--sections ksampler,share,...]
The GPU tier runs it on the H200 with the full-size SD1.5 random checkpoint (scripts/bench/gpu_run.sh).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import os

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "support"))
from comfy_client import ComfyServer  # noqa: E402

POLICY = dict(unet_dtype="auto", vae_dtype="auto", text_encoder_dtype="auto", detector_dtype="auto",
              sam_dtype="auto", intermediate_dtype="auto", on_mismatch="cast", on_nonfinite="retry")
TINY = "tiny_sd15.safetensors"
OVERFLOW_VAE = "tiny_overflow_vae.safetensors"


def sampler_prompt(ckpt, source, seed, size, steps, unet="auto", cfg=7.0):
    """Checkpoint -> prompts -> KSampler (node "6") whose MODEL comes from `source`; Dtype Inspect as the output."""
    p = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
    }
    model = ["1", 0]
    if source == "policy":
        p["5"] = {"class_type": "PrecisionSafePolicy", "inputs": {**POLICY, "unet_dtype": unet, "model": ["1", 0]}}
        model = ["5", 1]
    elif source == "guard":
        p["5"] = {"class_type": "PrecisionSafeGuard", "inputs": {"model": ["1", 0]}}
        model = ["5", 0]
    p["6"] = {"class_type": "KSampler", "inputs": {
        "model": model, "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": seed,
        "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}}
    p["7"] = {"class_type": "PrecisionSafeDtypeInspect", "inputs": {"value": ["6", 0]}}
    return p


def two_branch_prompt(ckpt, seed, size, steps, second="policy"):
    """Two KSamplers sharing one loader in one prompt: "6" on the stock MODEL, "16" on `second` (the policy-auto
    clone, or the stock MODEL again: the same work with nothing shared across a clone)."""
    p = sampler_prompt(ckpt, "stock", seed, size, steps)
    q = sampler_prompt(ckpt, second, seed + 1, size, steps)
    if second == "policy":
        p["5"] = q["5"]
    p["16"] = {**q["6"], "inputs": {**q["6"]["inputs"]}}
    p["17"] = {"class_type": "PrecisionSafeDtypeInspect", "inputs": {"value": ["16", 0]}}
    return p


def decode_prompt(ckpt, core, mult, size):
    node = "VAEDecode" if core else "PrecisionSafeVAEDecode"
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "LatentMultiply", "inputs": {"samples": ["4", 0], "multiplier": mult}},
        "6": {"class_type": node, "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "PrecisionSafeDtypeInspect", "inputs": {"value": ["6", 0]}},
    }


def overflow_prompt(vae_dtype, mult, size):
    """A VAE that overflows in fp16 (scripts/fixtures/make_tiny_models.py) decoding a real latent (a grey image encoded,
    scaled by 100 * `mult`, mult <= 1) through a policy: at fp16 SafeVAEDecode finds the NaN and decodes again at
    bf16; at bf16 it decodes once."""
    return {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": OVERFLOW_VAE}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1, "color": 8421504}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 0]}},
        "4": {"class_type": "PrecisionSafePolicy", "inputs": {**POLICY, "vae_dtype": vae_dtype, "vae": ["1", 0]}},
        "8": {"class_type": "LatentMultiply", "inputs": {"samples": ["3", 0], "multiplier": 10.0}},
        "5": {"class_type": "LatentMultiply", "inputs": {"samples": ["8", 0], "multiplier": 10.0 * mult}},
        "6": {"class_type": "PrecisionSafeVAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 3]}},
        "7": {"class_type": "PrecisionSafeDtypeInspect", "inputs": {"value": ["6", 0]}},
    }


def txt2img_prompt(ckpt, seed, size, steps, policy: bool):
    """The README's txt2img, saved by core SaveImage; with `policy`, MODEL/CLIP/VAE pass through a Precision Policy
    at its defaults (auto everywhere, enforce_downstream on)."""
    p = sampler_prompt(ckpt, "stock", seed, size, steps)
    del p["7"]
    model, clip, vae = ["1", 0], ["1", 1], ["1", 2]
    if policy:
        p["5"] = {"class_type": "PrecisionSafePolicy", "inputs": {
            **POLICY, "model": model, "clip": clip, "vae": vae}}
        model, clip, vae = ["5", 1], ["5", 2], ["5", 3]
    p["2"]["inputs"]["clip"] = p["3"]["inputs"]["clip"] = clip
    p["6"]["inputs"]["model"] = model
    p["8"] = {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": vae}}
    p["9"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "bench_txt2img"}}
    return p


def inspect_prompt(ckpt, strict):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "PrecisionSafeDtypeInspect", "inputs": {"value": ["1", 0], "strict": strict}},
    }


class Bench:
    def __init__(self, server: ComfyServer, args):
        self.server, self.args = server, args
        self.counter = 0

    def next_seed(self) -> int:
        self.counter += 1
        return self.counter

    def node_ms(self, prompt, node="6", extra=None) -> float | dict:
        run = self.server.run(prompt)
        if not run.success:
            raise RuntimeError(f"benchmark prompt failed: {run.error or run.rejected}")
        times = run.node_seconds()
        if extra:
            return {n: times[n] * 1000 for n in [node, *extra]}
        return times[node] * 1000

    def prompt_ms(self, prompt) -> tuple[float, dict]:
        """The whole prompt, from its execution_start message to its execution_success, and each node's ms."""
        run = self.server.run(prompt)
        if not run.success:
            raise RuntimeError(f"benchmark prompt failed: {run.error or run.rejected}")
        at = {e["type"]: e["received"] for e in run.events}
        return (at["execution_success"] - at["execution_start"]) * 1000, {
            n: t * 1000 for n, t in run.node_seconds().items()}

    def blocked(self, make, n, warmup=2, node="6") -> list[float]:
        for _ in range(warmup):
            self.node_ms(make(self.next_seed()), node)
        return [self.node_ms(make(self.next_seed()), node) for _ in range(n)]

    def vram_used_mib(self):
        """GPU memory torch holds allocated in the server (its reserve minus the free part of it), MiB."""
        dev = self.server.get("/system_stats")["devices"][0]
        return round((dev["torch_vram_total"] - dev["torch_vram_free"]) / 2**20, 1)

    def notes(self, prompt, node):
        run = self.server.run(prompt)
        return run.precision_records().get(node, {}).get("notes", [])


def med(xs):
    return round(statistics.median(xs), 2)


def ratio(a, b):
    return round(statistics.median(a) / statistics.median(b), 4)


def interleaved(b: Bench, makes: dict, n: int, warmup: int = 2, node="6") -> dict:
    """Node ms per variant, one prompt of each per round, the order rotated every round (drift hits all alike)."""
    names = list(makes)
    times = {k: [] for k in names}
    for i in range(warmup + n):
        order = names[i % len(names):] + names[:i % len(names)]
        for k in order:
            t = b.node_ms(makes[k](b.next_seed()), node)
            if i >= warmup:
                times[k].append(t)
    return times


def section_txt2img(b: Bench, a, out, start_server):
    _txt2img(b, a, out, "txt2img")
    with start_server(["--cache-lru", "64"]) as server2:
        b2 = Bench(server2, a)
        b2.counter = 20_000
        _txt2img(b2, a, out, "txt2img_cached")


def _paired(xs, ys):
    return round(statistics.median(x / y for x, y in zip(xs, ys)), 4)


def _txt2img(b: Bench, a, out, name):
    ck, size, steps = a.ckpt, a.size, a.steps
    variants = {"stock": False, "policy": True, "stock_again": False}
    times = {k: [] for k in variants}
    nodes = {k: {} for k in variants}
    names = list(variants)
    for i in range(2 + a.n * 2):  # one prompt of each per round, the order rotated every round
        for k in names[i % 3:] + names[:i % 3]:
            t, per_node = b.prompt_ms(txt2img_prompt(ck, b.next_seed(), size, steps, variants[k]))
            if i >= 2:
                times[k].append(t)
                for n, ms in per_node.items():
                    nodes[k].setdefault(n, []).append(ms)
    r = {"ms": {k: med(v) for k, v in times.items()}, "raw_ms": times,
         "node_ms": {k: {n: med(v) for n, v in by.items()} for k, by in nodes.items()},
         "policy/stock": ratio(times["policy"], times["stock"]),
         "aa_stock_again/stock": ratio(times["stock_again"], times["stock"]),
         "per_round_policy/stock": _paired(times["policy"], times["stock"]),
         "per_round_aa": _paired(times["stock_again"], times["stock"])}
    print(f"{name} (interleaved, whole prompt):", json.dumps({k: v for k, v in r.items() if k != "raw_ms"}),
          flush=True)
    out[name] = r


def section_ksampler(b: Bench, a, out):
    ck, size, steps = a.ckpt, a.size, a.steps
    variants = {
        "stock": lambda s: sampler_prompt(ck, "stock", s, size, steps),
        "policy_auto": lambda s: sampler_prompt(ck, "policy", s, size, steps),
        "policy_unet_fp16": lambda s: sampler_prompt(ck, "policy", s, size, steps, unet="fp16"),
        "guard": lambda s: sampler_prompt(ck, "guard", s, size, steps),
        "stock_again": lambda s: sampler_prompt(ck, "stock", s, size, steps),
    }
    res = {"policy_auto_notes": b.notes(sampler_prompt(ck, "policy", b.next_seed(), size, steps), "5")}
    for mode in ("blocked", "interleaved"):
        if mode == "blocked":
            times = {k: b.blocked(f, a.n) for k, f in variants.items()}
        else:
            times = interleaved(b, variants, a.n * 2)
        r = {"ms": {k: med(v) for k, v in times.items()}, "raw_ms": times,
             "aa_stock_again/stock": ratio(times["stock_again"], times["stock"])}
        for k in ("policy_auto", "policy_unet_fp16", "guard"):
            r[f"{k}/stock"] = ratio(times[k], times["stock"])
        res[mode] = r
        print(f"ksampler ({mode}):", json.dumps({k: v for k, v in r.items() if k != "raw_ms"}), flush=True)
    out["ksampler"] = res


def section_share(b: Bench, a, out):
    """Switching between the stock MODEL and a policy-auto clone of it, against switching between stock and stock:
    alternating prompts (each round: stock, policy, stock, stock) and both branches in one prompt, interleaved."""
    ck, size, steps = a.ckpt, a.size, a.steps
    stock = lambda s: sampler_prompt(ck, "stock", s, size, steps)  # noqa: E731
    pol = lambda s: sampler_prompt(ck, "policy", s, size, steps)  # noqa: E731
    seq = [("stock_before_policy", stock), ("policy_after_stock", pol), ("stock_before_stock", stock),
           ("stock_after_stock", stock)]
    alt = {k: [] for k, _ in seq}
    pairs = {"stock+policy": [], "stock+stock": [], "stock+stock_again": []}
    for i in range(2 + a.n * 2):
        for k, make in seq:
            t = b.node_ms(make(b.next_seed()))
            if i >= 2:
                alt[k].append(t)
        names = list(pairs)
        for k in names[i % 3:] + names[:i % 3]:
            t = b.node_ms(two_branch_prompt(ck, b.next_seed() * 2, size, steps, "policy" if k == "stock+policy"
                                            else "stock"), "6", extra=["16"])
            if i >= 2:
                pairs[k].append(t["6"] + t["16"])
    res = {"alternating_ms": {k: med(v) for k, v in alt.items()},
           "policy_after_stock/stock_after_stock": ratio(alt["policy_after_stock"], alt["stock_after_stock"]),
           "aa_stock_before_stock/stock_before_policy": ratio(alt["stock_before_stock"], alt["stock_before_policy"]),
           "one_prompt_pair_ms": {k: med(v) for k, v in pairs.items()},
           "pair stock+policy / stock+stock": ratio(pairs["stock+policy"], pairs["stock+stock"]),
           "pair stock+policy / (stock + policy alone)": round(statistics.median(pairs["stock+policy"]) / (
               statistics.median(alt["stock_after_stock"]) + statistics.median(alt["policy_after_stock"])), 4),
           "aa_pair stock+stock_again / stock+stock": ratio(pairs["stock+stock_again"], pairs["stock+stock"]),
           "raw_ms": {"alternating": alt, "pairs": pairs}}
    out["share"] = res
    print("share (interleaved):", json.dumps({k: v for k, v in res.items() if k != "raw_ms"}), flush=True)


def section_bf16(b: Bench, a, out, start_server):
    """PrecisionPolicy unet=bf16 on the fp16 checkpoint (this server) vs the checkpoint loaded at bf16 by a second
    server started with --bf16-unet on the same GPU; prompts alternate between the two servers."""
    ck, size, steps = a.ckpt, a.size, a.steps
    run = b.server.run(sampler_prompt(ck, "policy", b.next_seed(), size, steps, unet="bf16"))
    first = {n: round(t * 1000, 1) for n, t in run.node_seconds().items() if n in ("5", "6")}
    notes = run.precision_records().get("5", {}).get("notes", [])
    with start_server(["--bf16-unet"]) as server2:
        b2 = Bench(server2, a)
        b2.counter = 10_000
        makes = {"policy_bf16": lambda s: sampler_prompt(ck, "policy", s, size, steps, unet="bf16"),
                 "stock_bf16": None, "stock_bf16_again": None}
        stock = lambda s: sampler_prompt(ck, "stock", s, size, steps)  # noqa: E731
        times = {k: [] for k in makes}
        for i in range(2 + a.n * 2):
            for k in (list(makes)[i % 3:] + list(makes)[:i % 3]):
                t = b.node_ms(makes[k](b.next_seed())) if k == "policy_bf16" else b2.node_ms(stock(b2.next_seed()))
                if i >= 2:
                    times[k].append(t)
        vram = {"policy_server (fp16 weights + the bf16 copy)": b.vram_used_mib(),
                "bf16_unet_server": b2.vram_used_mib()}
    res = {"ms": {k: med(v) for k, v in times.items()},
           "policy_bf16/stock_bf16": ratio(times["policy_bf16"], times["stock_bf16"]),
           "aa_stock_bf16_again/stock_bf16": ratio(times["stock_bf16_again"], times["stock_bf16"]),
           "first_prompt_ms": first, "policy_notes": notes, "vram_used_mib": vram, "raw_ms": times}
    out["bf16"] = res
    print("bf16 (interleaved across two servers):", json.dumps({k: v for k, v in res.items() if k != "raw_ms"}),
          flush=True)


def section_decode(b: Bench, a, out):
    variants = {"core": True, "safe": False, "core_again": True}
    makes = {k: (lambda s, core=core: decode_prompt(a.ckpt, core, 1.0 + s * 1e-3, a.decode_size))
             for k, core in variants.items()}
    res = {"size": a.decode_size}
    for mode in ("blocked", "interleaved"):
        if mode == "blocked":
            times = {k: b.blocked(f, a.n * 2) for k, f in makes.items()}
        else:
            times = interleaved(b, makes, a.n * 2)
        res[mode] = {"ms": {k: med(v) for k, v in times.items()}, "safe/core": ratio(times["safe"], times["core"]),
                     "aa_core_again/core": ratio(times["core_again"], times["core"]), "raw_ms": times}
        print(f"decode ({mode}):", json.dumps({k: v for k, v in res[mode].items() if k != "raw_ms"}), flush=True)
    run = b.server.run(decode_prompt(a.ckpt, False, 0.5, a.decode_size))
    res["safe_node_own_ms (its record, one run)"] = round(run.precision_records()["6"]["seconds"] * 1000, 2)
    res["safe_node_gap_ms (same run)"] = round(run.node_seconds()["6"] * 1000, 2)
    out["decode"] = res
    makes = {k: (lambda s, d=d: overflow_prompt(d, 1.0 - s * 1e-4, a.decode_size))
             for k, d in (("bf16_direct", "bf16"), ("fp16_then_retry", "fp16"), ("bf16_direct_again", "bf16"))}
    times = interleaved(b, makes, a.n)
    run = b.server.run(overflow_prompt("fp16", 0.95, a.decode_size))
    res = {"ms": {k: med(v) for k, v in times.items()},
           "fp16_then_retry/bf16_direct": ratio(times["fp16_then_retry"], times["bf16_direct"]),
           "aa_bf16_direct_again/bf16_direct": ratio(times["bf16_direct_again"], times["bf16_direct"]),
           "retry_record": run.precision_records()["6"].get("retries"), "raw_ms": times}
    out["overflow_decode"] = res
    print("overflow decode (interleaved):", json.dumps({k: v for k, v in res.items() if k != "raw_ms"}), flush=True)


def section_inspect(b: Bench, a, out):
    res = {}
    for name in dict.fromkeys([a.ckpt, TINY]):
        times = []
        for i in range(a.n * 2 + 2):
            t = b.node_ms(inspect_prompt(name, bool(i % 2)))
            if i >= 2:
                times.append(t)
        res[name] = {"median_ms": med(times), "max_ms": round(max(times), 2)}
    out["inspect"] = res
    print("inspect:", json.dumps(res), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy", required=True)
    ap.add_argument("--cuda", action="store_true", help="run the server on the GPU (default: --cpu)")
    ap.add_argument("--ckpt", default=TINY)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--decode-size", type=int, default=1024)
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--sections", default="txt2img,ksampler,share,bf16,decode,inspect")
    ap.add_argument("--json")
    ap.add_argument("--log-dir")
    a = ap.parse_args()
    sections = a.sections.split(",")

    def start_server(extra=()):
        log = os.path.join(a.log_dir, f"server{'_' + '_'.join(extra) if extra else ''}.log") if a.log_dir else None
        return ComfyServer(a.comfy, cpu=not a.cuda, extra_args=list(extra), log_path=log)

    out = {"args": vars(a)}
    with start_server() as server:
        out["system_stats"] = server.get("/system_stats")
        b = Bench(server, a)
        for name in sections:
            if name in ("bf16", "txt2img"):
                globals()[f"section_{name}"](b, a, out, start_server)
            else:
                globals()[f"section_{name}"](b, a, out)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
