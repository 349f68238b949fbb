#!/usr/bin/env bash
# Installs the Debian packages headsurgeon builds against (skips apt when all are present).
# --tests adds what only the test suite uses (Chromium for the HTML report's browser test).
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config libopenblas-openmp-dev libgfortran5 nlohmann-json3-dev libpcre2-dev
      libutf8proc-dev zlib1g-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev libpng-dev)
[ "${1:-}" = --tests ] && PKGS+=(chromium)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
