#!/usr/bin/env bash
# Builds and runs the test suite. Extra arguments go to ctest, e.g. `-L golden` or `-LE slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --tests
scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
