#!/usr/bin/env bash
# One command for a newcomer: install dependencies, build, and diagnose the built-in model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
mkdir -p out
build/headsurgeon diagnose models/tiny16 --json out/diagnosis.json --svg out/diagnosis.svg
echo
echo "wrote out/diagnosis.json and out/diagnosis.svg"
