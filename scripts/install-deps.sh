#!/usr/bin/env bash
# Installs the Debian packages headsurgeon builds against (skips apt when all are present).
# --tests adds what only the test suite uses (Chromium for the HTML report's browser test);
# --fuzz what scripts/fuzz.sh builds with: clang, its libFuzzer and sanitizer runtimes
# (libclang-rt-14-dev) and its OpenMP (libomp-14-dev); --emulate what scripts/emulate_cuda.sh
# needs (python3, which rewrites the kernel launches). Several may be given.
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config libopenblas-openmp-dev libgfortran5 nlohmann-json3-dev libpcre2-dev
      libutf8proc-dev zlib1g-dev libcli11-dev libcurl4-openssl-dev libssl-dev libgtest-dev libgmock-dev libbenchmark-dev libpng-dev)
for opt in "$@"; do
  case $opt in
    --tests) PKGS+=(chromium) ;;
    --fuzz) PKGS+=(clang libclang-rt-14-dev libomp-14-dev) ;;
    --emulate) PKGS+=(python3) ;;
    *) echo "install-deps.sh: unknown option $opt (--tests, --fuzz, --emulate)" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
