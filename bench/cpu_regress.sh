#!/usr/bin/env bash
# CPU throughput on the bloom-560m shape, for before/after comparisons of a change (NOTES.md):
# load + diagnose end to end (second of two runs, warm page cache) and surgical repair tokens/s
# (the paper's pass-1 pattern: band H9-H15 of layers 5-22, 126 heads; 128-token sequences, 2
# per step, 10 steps). Usage: bench/cpu_regress.sh [BINARY_DIR] [CACHE_DIR]
# (defaults: build, /tmp/hs-bench). The tokens/s of repair is read from its last progress line.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build}
cache=${2:-/tmp/hs-bench}
mkdir -p "$cache"
d=$cache/bloom-560m
[ -f "$d/config.json" ] || "$bin/make_random_checkpoint" --shape bloom-560m --dtype bf16 \
  --tokenizer tests/data/golden/tokenizer/tokenizer.json -o "$d" >/dev/null
python3 - "$cache" <<'PY'
import json, sys
c = sys.argv[1]
json.dump({"targets": {str(l): list(range(9, 16)) for l in range(5, 23)}, "frozen_watch": {}},
          open(c + "/plan560.json", "w"))
words = open("README.md").read().split()
open(c + "/corpus.txt", "w").write(" ".join(words[i % len(words)] for i in range(2000)))
PY
for run in 1 2 3; do
  /usr/bin/time -f "%e" -o "$cache/t.txt" "$bin/headsurgeon" diagnose "$d" --json "$cache/d.json" -q >/dev/null
  echo "diagnose bloom-560m run $run: $(cat "$cache/t.txt") s"
done
rm -rf "$cache/run"
"$bin/headsurgeon" repair "$d" --plan "$cache/plan560.json" --corpus "$cache/corpus.txt" \
  -o "$cache/run" --epochs 1 --seq 128 --accum 2 --eval-every 100 2>&1 | tr '\r' '\n' |
  grep -E 'tok/s' | tail -1 | sed 's/^/repair bloom-560m: /'
