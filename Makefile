# The test host: a venv and a ComfyUI tree. By default .host/, the pinned ComfyUI 0.3.75 that CI uses (built on
# first use by scripts/host/setup_host.sh, reused after). `HOST=DIR` runs any target against another tree set up by
# `bash scripts/host/setup_comfy_host.sh PATH/TO/ComfyUI DIR`, e.g. `make test HOST=.host-0.33`.
HOST    ?= .host
PY      := $(HOST)/venv/bin/python
COMFY   := $(HOST)/ComfyUI
export COMFYUI_DIR := $(abspath $(COMFY))
export OMP_NUM_THREADS ?= 2
export YOLO_OFFLINE := 1
export YOLO_CONFIG_DIR := $(abspath $(HOST))/yolo_config
export MPLCONFIGDIR := $(abspath $(HOST))/mplconfig

.PHONY: host models demo serve test test-unit bench bench-gpu soak workflows clean-out

ifeq ($(HOST),.host)
host: .host/.venv-ok .host/.comfy-ok .host/.web-ok .host/.serve-ok
.host/.venv-ok .host/.comfy-ok .host/.web-ok .host/.serve-ok &: scripts/host/setup_host.sh scripts/host/host-requirements.txt scripts/host/host-constraints.txt scripts/host/test-requirements.txt
	bash scripts/host/setup_host.sh
	touch .host/.venv-ok .host/.comfy-ok .host/.web-ok .host/.serve-ok
else
host:
	@test -f $(HOST)/.venv-ok -a -f $(COMFY)/main.py || \
	  { echo "no test host in $(HOST): bash scripts/host/setup_comfy_host.sh PATH/TO/ComfyUI $(HOST)"; exit 1; }
endif

models: host
	$(PY) scripts/fixtures/make_tiny_models.py $(COMFY)

demo: models
	$(PY) scripts/fixtures/run_workflows.py --comfy $(COMFY) --out out

# The host's ComfyUI with its web editor, the pack and the tiny models, for a person to click around:
# open http://127.0.0.1:8188 (PORT=... for another port). On the CPU; SERVE_ARGS= (empty) on a machine with a GPU.
PORT       ?= 8188
SERVE_ARGS ?= --cpu
serve: models
	cd $(COMFY) && $(abspath $(PY)) main.py --listen 127.0.0.1 --port $(PORT) --disable-auto-launch $(SERVE_ARGS)

# The whole suite. The test-only nodes (PSTest_*) are linked into $(COMFY)/custom_nodes during the run and removed
# at its end (tests/conftest.py), so `make serve` afterwards shows only the pack.
test: models
	$(PY) -m pytest tests -q

test-unit: host
	$(PY) -m pytest tests/unit -q

bench: models
	$(PY) scripts/bench/bench.py --comfy $(COMFY)

# On a CUDA machine with this host; on the lent GPU machine use `bash scripts/bench/gpu_run.sh` (see BENCHMARKS.md).
bench-gpu: models
	$(PY) scripts/fixtures/make_tiny_models.py $(COMFY) --full
	$(PY) scripts/bench/bench_server.py --comfy $(COMFY) --cuda --ckpt sd15_full_random.safetensors --size 512 --steps 20

# 200 prompts over the HTTP API: expected outcomes, same prompt -> same image, resident memory flat (issue 6).
soak: models
	$(PY) scripts/bench/soak.py --comfy $(COMFY)

workflows: host
	$(PY) scripts/fixtures/make_workflows.py

clean-out:
	rm -rf out
