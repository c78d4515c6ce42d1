"""`make soak`: queue a few hundred prompts through one real ComfyUI server on loopback and check that nothing
drifts: every prompt succeeds or fails exactly where expected, the same prompt always gives the same pixels
(no state carried from one prompt to the next), and the server's resident memory stays flat after a warm-up.

The prompts rotate through the bundled workflows on the tiny CPU models, shrunk so that a run takes minutes:
  tour     Policy tour, unet/vae dtypes alternating fp32/bf16 (32x32, 1 step)
  fail     the dtype mismatch in on_mismatch=error mode that must stop on node 5 (test-only node pack)
  rescue   Black-image rescue (1 step)
  detailer Detailer (1 step)
per 10 prompts: 5 tour, 2 rescue, 2 fail, 1 detailer.
Seeds change from prompt to prompt so ComfyUI's cache cannot skip the work; a few fixed-seed prompts come back
at different times and must give the same image hashes (sha256 of the decoded pixels read back through /view).

Bounded in count (--count) and time (--max-seconds); exits non-zero on any violation.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "support"))
from comfy_client import (CHECKPOINT, COMFY_DIR, ERROR_MODE_PROMPT, ROOT, ComfyServer, ensure_models,  # noqa: E402
                          link_testing_nodes, ui_to_api)

REPEAT_SEED = 424242  # the fixed seed of the prompts that come back
FAIL_NODE, FAIL_TYPE = "5", "PrecisionSafeVAEDecode"  # where comfy_client's ERROR_MODE_PROMPT stops
FAIL_MESSAGE_PARTS = ("Safe VAE Decode #5", "input 'samples'", "got bf16", "expects fp32", "Fix:")


def load_workflow(part):
    path = next(p for p in sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json"))) if part in p)
    with open(path) as f:
        return json.load(f)


def node_of(prompt, class_type, **match):
    """The id of the only node of this type (whose inputs match `match`) in an API prompt."""
    ids = [nid for nid, n in prompt.items() if n["class_type"] == class_type
           and all(n["inputs"].get(k) == v for k, v in match.items())]
    if len(ids) != 1:
        raise KeyError(f"expected one {class_type} {match or ''} node, found {ids}")
    return ids[0]


class Prompts:
    """Builds the API prompts of each kind from the bundled workflows, shrunk for speed."""

    def __init__(self, object_info):
        self.tour = ui_to_api(load_workflow("Policy tour"), object_info)
        self.tour_policy = node_of(self.tour, "PrecisionSafePolicy")
        self.tour_sampler = node_of(self.tour, "KSampler")
        self.tour[node_of(self.tour, "EmptyLatentImage")]["inputs"].update(width=32, height=32, batch_size=1)
        self.tour[self.tour_sampler]["inputs"]["steps"] = 1

        self.rescue = ui_to_api(load_workflow("Black-image rescue"), object_info)
        self.rescue_sampler = node_of(self.rescue, "KSampler")
        self.rescue[self.rescue_sampler]["inputs"]["steps"] = 1

        self.detailer = ui_to_api(load_workflow("Detailer - shapes"), object_info)
        self.detailer_node = node_of(self.detailer, "PrecisionSafeDetailer")
        self.detailer[self.detailer_node]["inputs"]["steps"] = 1

    def build(self, kind, seed, dtype=None):
        if kind == "fail":
            return json.loads(json.dumps(ERROR_MODE_PROMPT))
        base, seed_node = {"tour": (self.tour, self.tour_sampler), "rescue": (self.rescue, self.rescue_sampler),
                           "detailer": (self.detailer, self.detailer_node)}[kind]
        p = json.loads(json.dumps(base))
        p[seed_node]["inputs"]["seed"] = seed
        if kind == "tour":
            p[self.tour_policy]["inputs"].update(unet_dtype=dtype, vae_dtype=dtype)
        return p


def schedule(count):
    """(kind, dtype, seed) for each prompt. Per 10 prompts: 5 tour, 2 rescue, 2 fail, 1 detailer; every 4th
    tour/rescue/detailer of its kind reuses REPEAT_SEED so identical prompts come back at different times."""
    plan, n_of = [], {}
    for i in range(count):
        slot = i % 10
        kind = {1: "rescue", 6: "rescue", 3: "fail", 8: "fail", 9: "detailer"}.get(slot, "tour")
        k = n_of.get(kind, 0)
        n_of[kind] = k + 1
        dtype = ("fp32", "bf16")[k % 2] if kind == "tour" else None
        if kind == "fail":
            seed = None
        elif kind == "tour":
            seed = REPEAT_SEED if (k // 2) % 4 == 0 else 1000 + i  # both dtypes get repeats
        else:
            seed = REPEAT_SEED if k % 4 == 0 else 1000 + i
        plan.append((kind, dtype, seed))
    return plan


def decoded_hash(server, ref):
    img = Image.open(io.BytesIO(server.image_bytes(ref)))
    img.load()
    arr = np.asarray(img)
    h = hashlib.sha256(f"{img.mode}{img.size}".encode() + arr.tobytes()).hexdigest()
    return h, arr


def check_run(server, kind, run):
    """(problems, image hashes in output order, image filenames)."""
    problems, hashes, files = [], [], []
    if run.rejected is not None:
        return [f"prompt rejected: {json.dumps(run.rejected)[:300]}"], hashes, files
    if kind == "fail":
        err = run.error or {}
        if run.success:
            problems.append("succeeded but must fail")
        elif err.get("node_id") != FAIL_NODE or err.get("node_type") != FAIL_TYPE:
            problems.append(f"failed on node {err.get('node_id')} ({err.get('node_type')}), "
                            f"expected {FAIL_NODE} ({FAIL_TYPE})")
        else:
            missing = [s for s in FAIL_MESSAGE_PARTS if s not in err.get("exception_message", "")]
            if missing:
                problems.append(f"error message lacks {missing}: {err.get('exception_message', '')[:200]!r}")
        return problems, hashes, files
    if not run.success:
        err = run.error or {}
        return [f"failed on node {err.get('node_id')}: {str(err.get('exception_message'))[:200]}"], hashes, files
    images = sorted(run.images(), key=lambda ni: (int(ni[0]), ni[1]["filename"]))
    if not images:
        problems.append("no image")
    means = {}
    for nid, ref in images:
        h, arr = decoded_hash(server, ref)
        hashes.append(h)
        files.append(ref["filename"])
        means.setdefault(ref["filename"].split("_0")[0], []).append(float(arr.mean()))
        if kind in ("tour", "detailer") and not ref["filename"].startswith("detailer_mask") and arr.std() <= 2:
            problems.append(f"{ref['filename']} is flat (std {arr.std():.2f})")
    if kind == "rescue":
        core, safe = means.get("rescue_core_black", []), means.get("rescue_safe", [])
        if not core or min(core) != 0.0:
            problems.append(f"stock VAEDecode was expected to give one black image, means {core}")
        if not safe or min(safe) <= 10:
            problems.append(f"SafeVAEDecode gave a black image, means {safe}")
    return problems, hashes, files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfy", default=COMFY_DIR)
    ap.add_argument("--count", type=int, default=200, help="prompts to queue")
    ap.add_argument("--max-seconds", type=float, default=900, help="stop queueing after this long (a violation)")
    ap.add_argument("--prompt-timeout", type=float, default=300)
    ap.add_argument("--warmup", type=int, default=40, help="prompts before the memory baseline")
    ap.add_argument("--window", type=int, default=20, help="prompts in the baseline and in the final window")
    ap.add_argument("--rss-tolerance", type=float, default=0.05, help="allowed RSS growth after the warm-up")
    ap.add_argument("--json", help="write per-prompt records here")
    ap.add_argument("--keep", action="store_true", help="keep the server's output folder and log")
    args = ap.parse_args()

    comfy = os.path.abspath(args.comfy)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    if not os.path.exists(os.path.join(comfy, "models", "checkpoints", CHECKPOINT)):
        ensure_models(comfy)
    link_testing_nodes(comfy)  # the PSTest_* nodes of the prompt that must fail

    out_dir = tempfile.mkdtemp(prefix="soak_out_")
    plan = schedule(args.count)
    records, violations = [], []
    t_start = time.time()
    with ComfyServer(comfy, output_dir=out_dir, log_path=os.path.join(out_dir, "server.log")) as server:
        proc = psutil.Process(server.proc.pid)
        prompts = Prompts(server.object_info())
        rss0 = proc.memory_info().rss
        print(f"server pid {server.proc.pid} on {server.url}; RSS at start {rss0 / 2**20:.0f} MiB; "
              f"{args.count} prompts, at most {args.max_seconds:.0f} s", flush=True)
        for i, (kind, dtype, seed) in enumerate(plan):
            if time.time() - t_start > args.max_seconds:
                violations.append(f"time bound: only {i} of {args.count} prompts in {args.max_seconds:.0f} s")
                break
            t0 = time.time()
            run = server.run(prompts.build(kind, seed, dtype), timeout=args.prompt_timeout)
            seconds = time.time() - t0
            problems, hashes, files = check_run(server, kind, run)
            rss = sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
            rec = {"i": i, "kind": kind, "dtype": dtype, "seed": seed, "seconds": round(seconds, 3),
                   "success": bool(run.success), "error_node": (run.error or {}).get("node_id"),
                   "problems": problems, "hashes": hashes, "files": files, "rss": rss}
            records.append(rec)
            for p in problems:
                violations.append(f"prompt {i} ({kind}{' ' + dtype if dtype else ''} seed {seed}): {p}")
            print(f"{i:4d} {kind:8s} {dtype or '':4s} seed {str(seed):>7s} {seconds:6.2f} s "
                  f"{'ok' if not problems else 'VIOLATION'} rss {rss / 2**20:7.1f} MiB"
                  f"{'  ' + '; '.join(problems) if problems else ''}", flush=True)
    wall = time.time() - t_start

    # -- same prompt, same pixels ---------------------------------------------------------------------------------
    by_key = {}
    for r in records:
        if r["kind"] != "fail" and r["seed"] == REPEAT_SEED and not r["problems"]:
            by_key.setdefault((r["kind"], r["dtype"]), []).append(r)
    repeat_rows = []
    for (kind, dtype), rs in sorted(by_key.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        distinct = {tuple(r["hashes"]) for r in rs}
        files = [f for r in rs for f in r["files"]]
        fresh = len(files) == len(set(files))  # each repeat wrote new files, so it ran again (not a cache hit)
        repeat_rows.append((kind, dtype or "-", len(rs), [r["i"] for r in rs], len(distinct), fresh))
        if len(rs) < 2:
            violations.append(f"repeat {kind} {dtype or '-'}: ran only {len(rs)} time(s), nothing to compare")
        if len(distinct) != 1:
            violations.append(f"repeat {kind} {dtype or '-'}: {len(distinct)} different image hashes over prompts "
                              f"{[r['i'] for r in rs]}")
        if not fresh:
            violations.append(f"repeat {kind} {dtype or '-'}: a repeat wrote no new file (served from cache?)")

    # -- memory ---------------------------------------------------------------------------------------------------
    rss = [r["rss"] for r in records]
    rss_line, growth = "not checked (too few prompts)", None
    if len(rss) >= args.warmup + 2 * args.window:
        base = statistics.median(rss[args.warmup:args.warmup + args.window])
        last = max(rss[-args.window:])
        growth = last / base - 1
        rss_line = (f"median of prompts {args.warmup}-{args.warmup + args.window - 1}: {base / 2**20:.1f} MiB; "
                    f"max of the last {args.window}: {last / 2**20:.1f} MiB; growth {growth * 100:+.2f} % "
                    f"(limit {args.rss_tolerance * 100:.0f} %)")
        if growth > args.rss_tolerance:
            violations.append(f"RSS grew {growth * 100:.2f} % after the warm-up")
    elif len(records) < args.count:
        pass  # already a time-bound violation
    else:
        violations.append(f"RSS not checked: {len(rss)} prompts < warm-up {args.warmup} + 2 x {args.window}")

    # -- summary --------------------------------------------------------------------------------------------------
    print(f"\n== soak: {len(records)}/{args.count} prompts in {wall:.0f} s "
          f"(server RSS at start {rss0 / 2**20:.0f} MiB)")
    print(f"{'kind':9s} {'dtype':5s} {'n':>4s} {'as expected':>11s} {'mean s':>7s} {'median s':>8s} {'max s':>6s}")
    groups = {}
    for r in records:
        groups.setdefault((r["kind"], r["dtype"] or "-"), []).append(r)
    for (kind, dtype), rs in sorted(groups.items()):
        secs = [r["seconds"] for r in rs]
        ok = sum(not r["problems"] for r in rs)
        print(f"{kind:9s} {dtype:5s} {len(rs):4d} {ok:11d} {statistics.mean(secs):7.2f} "
              f"{statistics.median(secs):8.2f} {max(secs):6.2f}")
    print("\nrepeats (same prompt, seed %d):" % REPEAT_SEED)
    print(f"{'kind':9s} {'dtype':5s} {'runs':>4s} {'distinct hashes':>15s} {'fresh files':>11s}  prompts")
    for kind, dtype, n, idx, distinct, fresh in repeat_rows:
        print(f"{kind:9s} {dtype:5s} {n:4d} {distinct:15d} {'yes' if fresh else 'NO':>11s}  {idx}")
    print(f"\nRSS: {rss_line}")
    if rss:
        print(f"RSS min/max over all prompts: {min(rss) / 2**20:.1f} / {max(rss) / 2**20:.1f} MiB")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"records": records, "violations": violations, "wall_seconds": wall}, f, indent=1)
    if args.keep:
        print(f"server output and log kept in {out_dir}")
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
    if violations:
        print(f"\n{len(violations)} VIOLATION(S):")
        for v in violations:
            print(f"  - {v}")
        sys.exit(1)
    print("\nsoak: OK")


if __name__ == "__main__":
    main()
