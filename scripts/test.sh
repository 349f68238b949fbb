#!/usr/bin/env bash
# Builds and runs the test suite. Extra arguments go to ctest, e.g. `-L golden` or `-LE slow`.
# --sanitize: a separate tree (build-sanitize) with AddressSanitizer and UndefinedBehaviorSanitizer,
# running the unit, golden and cli labels there (the binary the cli tests run is instrumented too).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --tests
if [ "${1:-}" = --sanitize ]; then
  shift
  cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHEADSURGEON_CUDA=OFF \
    -DHEADSURGEON_SANITIZE=ON -DHEADSURGEON_BENCH=OFF >/dev/null
  cmake --build build-sanitize -j"$(nproc)"
  # Leaks, use-after-free, overflows and undefined behaviour all fail the test that meets them.
  # The crash tests preload a write(2) shim ahead of the ASan runtime (verify_asan_link_order).
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:verify_asan_link_order=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  ctest --test-dir build-sanitize --output-on-failure -j"$(nproc)" -L "unit|golden|cli" "$@"
  exit
fi
scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
