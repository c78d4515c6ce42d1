#!/usr/bin/env bash
# GPU tier: a real ComfyUI 0.3.75 server with this pack on CUDA — the GPU tests (tests/gpu: host functions on CUDA,
# and every bundled workflow, fault scenarios and a strict Dtype Inspect default graph through the server) and the
# per-node benchmarks inside the server (scripts/bench/bench_server.py, scripts/bench/bench_detailer.py).
#
#   bash scripts/bench/gpu_run.sh prepare   # here, after `make host`: fills .gpu_carry/ (git-ignored via
#                                     # .git/info/exclude): ComfyUI's tree (no models) as a tarball, the pure-Python
#                                     # packages the GPU image lacks (copied from .host/venv) and cp312 wheels of the
#                                     # compiled ones (pydantic-core, kornia-rs, SQLAlchemy) from PyPI. ~20 MB.
#   bash scripts/bench/gpu_run.sh [tests|bench|detailer|enforce|all]   # there, from the repo root (the `run` tool, carry
#                                     # [".gpu_carry"]); logs and JSON go to $OUT (default out/gpu). Steps already
#                                     # done on a warm machine (unpacking, models) are skipped. `all` is tests and
#                                     # bench (about 7 min); detailer and enforce are a second call.
# The GPU machine has Python 3.12 with torch but none of ComfyUI's other dependencies and no network.
set -uo pipefail
cd "$(dirname "$0")/../.."
CARRY=${GPU_CARRY:-$PWD/.gpu_carry}
WORK=${GPU_WORK:-/tmp/ps_gpu}

if [ "${1:-}" = "prepare" ]; then
    set -e
    SITE=$(echo .host/venv/lib/python3*/site-packages)
    mkdir -p .git/info
    grep -qxF '/.gpu_carry/' .git/info/exclude 2>/dev/null || echo '/.gpu_carry/' >> .git/info/exclude
    rm -rf "$CARRY" && mkdir -p "$CARRY/site" "$CARRY/wheels"
    for p in ultralytics ultralytics_thop-* thop ultralytics_platform segment_anything torchsde trampoline alembic \
             mako pydantic pydantic-[0-9]* pydantic_settings dotenv annotated_types typing_inspection \
             typing_extensions.py typing_extensions-* kornia kornia-* spandrel spandrel-* websocket gguf; do
        cp -r "$SITE"/$p "$CARRY/site/"
    done
    .host/venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$CARRY/wheels" pydantic_core==2.50.5 kornia_rs==0.2.0 sqlalchemy==2.1.9
    tar -C .host -czf "$CARRY/ComfyUI.tar.gz" --exclude='ComfyUI/models' --exclude='ComfyUI/output' \
        --exclude='ComfyUI/input' --exclude='ComfyUI/user' --exclude='ComfyUI/temp' --exclude='ComfyUI/tests' \
        --exclude='ComfyUI/tests-unit' --exclude='ComfyUI/custom_nodes/*' --exclude='__pycache__' ComfyUI
    find "$CARRY" -name __pycache__ -type d -prune -exec rm -rf {} +
    du -sh "$CARRY"
    exit 0
fi

STEP=${1:-all}
OUT=${OUT:-$PWD/out/gpu}
# The benchmarked servers get half of this 16-core machine's CPU threads (BENCH_THREADS to change): with all 16, the
# server's own threads and the benchmark client beside it oversubscribe the cores, and a 1024² decode's time spread
# over ~20 ms between quartiles (8 threads: ~1 ms; the KSampler was fastest at 2). BENCHMARKS.md says which runs had
# which.
BENCH_THREADS=${BENCH_THREADS:-8}
mkdir -p "$OUT" "$WORK"
export COMFYUI_DIR="$WORK/ComfyUI"
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 YOLO_CONFIG_DIR=$WORK/yolo_config MPLCONFIGDIR=$WORK/mplconfig

if [ ! -f "$WORK/.ready" ]; then
    tar -C "$WORK" -xzf "$CARRY/ComfyUI.tar.gz" && mkdir -p "$COMFYUI_DIR/custom_nodes"
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$CARRY"/wheels/*.whl
    cp -r "$CARRY"/site/* "$WORK/site/"
    # STAND-IN FOR PyAV, GPU tier only: comfy_api.latest imports `av` (and av.container, av.subtitles.stream,
    # av.error) at import time, for video nodes this tier never runs; PyAV's wheel is ~35 MB, too big to carry.
    # Every attribute of this stand-in is an empty placeholder class: any real use of video fails loudly.
    mkdir -p "$WORK/site/av"
    cat > "$WORK/site/av/__init__.py" <<'PY'
"""STAND-IN for PyAV on the GPU test machine only (scripts/bench/gpu_run.sh): placeholders, no video support."""
import importlib.abc
import importlib.machinery
import sys
import types


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return type(name, (), {"__doc__": "PyAV stand-in placeholder"})


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("av."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__getattr__ = __getattr__
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


sys.meta_path.append(_Finder())
PY
    ln -sfn "$PWD" "$COMFYUI_DIR/custom_nodes/comfyui-precision-safe"
    {
        date -u
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
        python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
    } 2>&1 | tee "$OUT/env.txt"
    python3 scripts/fixtures/make_tiny_models.py "$COMFYUI_DIR" 2>&1 | tee "$OUT/models.log" && \
    python3 scripts/fixtures/make_tiny_models.py "$COMFYUI_DIR" --full 2>&1 | tee -a "$OUT/models.log" && touch "$WORK/.ready"
fi

rc=0
if [ "$STEP" = "tests" ] || [ "$STEP" = "all" ]; then
    # GPU_TESTS: the test paths (default: the whole GPU tier)
    python3 -m pytest ${GPU_TESTS:-tests/gpu tests/unit/test_fp16_probe.py} -q -rs -s -p no:cacheprovider 2>&1 \
        | tee "$OUT/gpu_tests.log"
    rc=$((rc | ${PIPESTATUS[0]}))
fi
if [ "$STEP" = "bench" ] || [ "$STEP" = "all" ]; then
    OMP_NUM_THREADS=$BENCH_THREADS python3 scripts/bench/bench_server.py --comfy "$COMFYUI_DIR" --cuda \
        --ckpt sd15_full_random.safetensors --size 512 \
        --steps 20 --n ${BENCH_N:-6} --json "$OUT/bench_server.json" --log-dir "$WORK" ${BENCH_ARGS:-} 2>&1 \
        | tee "$OUT/bench_server.log"
    rc=$((rc | ${PIPESTATUS[0]}))
fi
if [ "$STEP" = "detailer" ]; then
    for layout in ${DETAILER_LAYOUTS:-same_size three_plus_one}; do
        OMP_NUM_THREADS=$BENCH_THREADS python3 scripts/bench/bench_detailer.py --comfy "$COMFYUI_DIR" --cuda \
            --ckpt sd15_full_random.safetensors \
            --crop 512 --steps 20 --rounds ${BENCH_N:-5} $([ $layout = same_size ] && echo --same-size) \
            --json "$OUT/bench_detailer_$layout.json" 2>&1 | tee "$OUT/bench_detailer_$layout.log"
        rc=$((rc | ${PIPESTATUS[0]}))
    done
fi
if [ "$STEP" = "enforce" ] || { [ "$STEP" = "detailer" ] && [ -z "${DETAILER_LAYOUTS:-}" ]; }; then
    OMP_NUM_THREADS=$BENCH_THREADS python3 scripts/bench/bench_enforce.py --comfy "$COMFYUI_DIR" --cuda --skip-edge --n 20 \
        2>&1 | tee "$OUT/bench_enforce.log"
    rc=$((rc | ${PIPESTATUS[0]}))
fi
echo "gpu_run $STEP rc=$rc" | tee -a "$OUT/env.txt"
exit $rc
