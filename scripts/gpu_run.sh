#!/usr/bin/env bash
# GPU tier: tests/gpu + scripts/bench_gpu.py on a CUDA machine that has torch but not ComfyUI.
#
#   bash scripts/gpu_run.sh prepare   # here (dev host, after `make host`): fills .gpu_carry/ (git-ignored via
#                                     # .git/info/exclude) with ComfyUI's source (no models) and the pure-Python
#                                     # packages the GPU image lacks (ultralytics, segment_anything, torchsde,
#                                     # trampoline), copied from .host/venv. ~40 MB.
#   bash scripts/gpu_run.sh           # there, from the repo root (the `run` tool with carry [".gpu_carry"]):
#                                     # tiny models regenerated, GPU tests, fp16-probe unit tests, benchmarks;
#                                     # logs and bench.json to $OUT (default out/gpu).
# Env: GPU_CARRY (default .gpu_carry), BENCH_ARGS (extra args for bench_gpu.py, e.g. "--detailer").
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=${GPU_CARRY:-$PWD/.gpu_carry}

if [ "${1:-}" = "prepare" ]; then
    set -e
    SITE=$(echo .host/venv/lib/python3*/site-packages)
    grep -qxF '/.gpu_carry/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu_carry/' >> .git/info/exclude; }
    rm -rf "$CARRY" && mkdir -p "$CARRY/site" "$CARRY/ComfyUI"
    for p in ultralytics segment_anything torchsde trampoline; do cp -r "$SITE/$p" "$CARRY/site/"; done
    (cd .host/ComfyUI && cp -r comfy comfy_api comfy_execution utils app folder_paths.py node_helpers.py \
        comfyui_version.py latent_preview.py cuda_malloc.py protocol.py "$CARRY/ComfyUI/")
    find "$CARRY" -name __pycache__ -type d -prune -exec rm -rf {} +
    du -sh "$CARRY"
    exit 0
fi

OUT=${OUT:-$PWD/out/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$CARRY/site${PYTHONPATH:+:$PYTHONPATH}"
export COMFYUI_DIR="$CARRY/ComfyUI"
export PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 YOLO_CONFIG_DIR=/tmp/yolo_config MPLCONFIGDIR=/tmp/mplconfig
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
} 2>&1 | tee "$OUT/env.txt"

python3 scripts/make_tiny_models.py "$COMFYUI_DIR" 2>&1 | tee "$OUT/models.log"
rc_models=$?

python3 -m pytest tests/gpu tests/unit/test_fp16_probe.py -q -rs -s 2>&1 | tee "$OUT/gpu_tests.log"
rc_tests=$?

python3 scripts/bench_gpu.py --comfy "$COMFYUI_DIR" --json "$OUT/bench.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
rc_bench=$?

echo "models rc=$rc_models tests rc=$rc_tests bench rc=$rc_bench" | tee -a "$OUT/env.txt"
[ $rc_models -eq 0 ] && [ $rc_tests -eq 0 ] && [ $rc_bench -eq 0 ]
