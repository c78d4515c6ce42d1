#!/usr/bin/env bash
# The browser tests' Chromium (Debian's package; it lives outside the test hosts, so every host setup checks for it).
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  echo "[host] installing Debian's chromium"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium
fi
