# Dev host: a venv with pinned torch + ComfyUI 0.3.75 under .host/ (built on first use, reused after).
PY      := .host/venv/bin/python
COMFY   := .host/ComfyUI
export OMP_NUM_THREADS ?= 2
export YOLO_OFFLINE := 1
export YOLO_CONFIG_DIR := $(CURDIR)/.host/yolo_config
export MPLCONFIGDIR := $(CURDIR)/.host/mplconfig

.PHONY: host models demo test test-unit bench bench-gpu soak workflows clean-out

host: .host/.venv-ok .host/.comfy-ok .host/.web-ok
.host/.venv-ok .host/.comfy-ok .host/.web-ok &: scripts/setup_host.sh scripts/host-requirements.txt scripts/host-constraints.txt
	bash scripts/setup_host.sh
	touch .host/.venv-ok .host/.comfy-ok .host/.web-ok

models: host
	$(PY) scripts/make_tiny_models.py $(COMFY)

demo: models
	$(PY) scripts/run_workflows.py --comfy $(COMFY) --out out

test: models
	$(PY) -m pytest tests -q

test-unit: host
	$(PY) -m pytest tests/unit -q

bench: models
	$(PY) scripts/bench.py --comfy $(COMFY)

# On a CUDA machine with this host; on the lent GPU machine use `bash scripts/gpu_run.sh` (see BENCHMARKS.md).
bench-gpu: models
	$(PY) scripts/bench_gpu.py --comfy $(COMFY) --detailer

# 200 prompts over the HTTP API: expected outcomes, same prompt -> same image, resident memory flat (issue 6).
soak: models
	$(PY) scripts/soak.py --comfy $(COMFY)

workflows: host
	$(PY) scripts/make_workflows.py

clean-out:
	rm -rf out
