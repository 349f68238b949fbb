#!/usr/bin/env bash
# One command for a newcomer: install dependencies, build, and run the demo on the built-in model
# in the paper's two passes (diagnose -> plan -> repair -> diagnose again, beside the gradient-only
# control; then the sick heads outside the band, on pass 1's result).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
mkdir -p out
build/headsurgeon demo -o out/demo --json out/demo/demo.json
