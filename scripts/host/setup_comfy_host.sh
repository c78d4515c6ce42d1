#!/usr/bin/env bash
# A test host for another ComfyUI tree (your checkout of a newer release, say), beside the pinned one in .host/:
#
#   bash scripts/host/setup_comfy_host.sh PATH/TO/ComfyUI [HOST_DIR]    # HOST_DIR defaults to .host-<its version>
#   make test HOST=HOST_DIR                                         # the whole suite against that tree
#
# HOST_DIR/ComfyUI: a copy of the tree without .git, models, custom nodes, user data and outputs (your checkout
#   stays as it is: the tests write tiny models and link two node folders into the copy). The pack is linked as
#   custom_nodes/precision-safe, the folder the README installs into.
# HOST_DIR/venv: its own venv (never the pinned host's): torch/torchvision pinned as for the pinned host
#   (scripts/host/host-constraints.txt), the tree's requirements.txt as it names them (its frontend package included),
#   the pack's requirements.txt and the test tools (scripts/host/test-requirements.txt).
# Idempotent: each step is skipped when its stamp exists (the copy's stamp names the tree it came from).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
py="${PYTHON:-python3}"
tree="$(cd "${1:?usage: setup_comfy_host.sh PATH/TO/ComfyUI [HOST_DIR]}" && pwd)"
if [ ! -f "$tree/main.py" ] || [ ! -f "$tree/comfyui_version.py" ] || [ ! -f "$tree/requirements.txt" ]; then
  echo "$tree is not a ComfyUI tree (no main.py, comfyui_version.py, requirements.txt)" >&2
  exit 2
fi
version="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$tree/comfyui_version.py")"
host="${2:-$root/.host-$version}"
mkdir -p "$host"
host="$(cd "$host" && pwd)"

if [ "$tree" != "$host/ComfyUI" ] && [ "$(cat "$host/.comfy-ok" 2>/dev/null)" != "$tree" ]; then
  echo "[host $version] copying $tree to $host/ComfyUI"
  rm -rf "$host/ComfyUI"
  mkdir -p "$host/ComfyUI"
  tar -C "$tree" --exclude=./.git --exclude=./models --exclude=./custom_nodes --exclude=./user \
      --exclude=./output --exclude=./temp --exclude=./venv --exclude=./.venv --exclude=__pycache__ -cf - . \
    | tar -C "$host/ComfyUI" -xf -
  echo "$tree" > "$host/.comfy-ok"
fi

if [ ! -f "$host/.venv-ok" ]; then
  echo "[host $version] creating $host/venv (first run: a few minutes)"
  rm -rf "$host/venv"
  "$py" -m venv "$host/venv"
  "$host/venv/bin/python" -m pip install -q --upgrade pip
  "$host/venv/bin/python" -m pip install -q -c "$root/scripts/host/host-constraints.txt" \
      -r "$host/ComfyUI/requirements.txt" -r "$root/requirements.txt" -r "$root/scripts/host/test-requirements.txt"
  touch "$host/.venv-ok"
fi

bash "$root/scripts/host/install_chromium.sh"

mkdir -p "$host/ComfyUI/custom_nodes" "$host/ComfyUI/models"
ln -sfn "$root" "$host/ComfyUI/custom_nodes/precision-safe"
echo "[host $version] ready: $host/ComfyUI (python: $host/venv/bin/python); run: make test HOST=$host"
