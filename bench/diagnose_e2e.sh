#!/usr/bin/env bash
# End-to-end CPU benchmark: load + diagnose of random checkpoints with real BLOOM shapes.
# Usage: bench/diagnose_e2e.sh [CACHE_DIR] [SHAPES...]   (default: /tmp/hs-bench, 560m 1b7 7b1)
# Writes each checkpoint once (bf16, make_random_checkpoint), then runs the diagnosis twice and
# reports the second run (warm page cache), wall time and peak RSS from /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${1:-/tmp/hs-bench}; shift || true
shapes=("$@"); [ ${#shapes[@]} -gt 0 ] || shapes=(bloom-560m bloom-1b7 bloom-7b1)
mkdir -p "$cache"
for s in "${shapes[@]}"; do
  d="$cache/$s"
  [ -f "$d/config.json" ] || build/make_random_checkpoint --shape "$s" --dtype bf16 \
    --tokenizer tests/data/golden/tokenizer/tokenizer.json -o "$d"
  for run in cold warm; do
    /usr/bin/time -f "%e s wall, %M KB peak RSS" -o "$cache/time.txt" \
      build/headsurgeon diagnose "$d" --json "$cache/$s.json" -q >/dev/null
    echo "$s ($run): $(cat "$cache/time.txt")"
  done
done
