#!/usr/bin/env bash
# One device call (see bench/gpu_prepare.sh): the GPU tests, our timings and the HF anchor on the
# same machine, then a table of ratios. Nothing is built or installed there. Full logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
G=/tmp/hs-gpu-bin
OUT=${OUT:-/tmp/hs-out}
W=${HS_BENCH_DIR:-/tmp/hs-gpu}
mkdir -p "$OUT" "$W" "$G"
tar xJf .gpu/bin.tar.xz -C "$G"
export LD_LIBRARY_PATH=$G/lib:${LD_LIBRARY_PATH:-}
export HEADSURGEON_GOLDEN_DIRS=$PWD/tests/data/golden/models/tiny16:$PWD/tests/data/golden/models/tiny8
TOK=$PWD/tests/data/golden/tokenizer/tokenizer.json
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader

echo "== GPU tests"
"$G/test_cuda" >"$OUT/test_cuda.txt" 2>&1
echo "test_cuda exit $?"; grep -E "^\[  (PASSED|FAILED|SKIPPED) |^measured|Failure" "$OUT/test_cuda.txt" | head -40

echo "== compute-sanitizer: out-of-bounds accesses and shared-memory races in the kernel tests"
for tool in memcheck racecheck; do
  compute-sanitizer --tool "$tool" --error-exitcode 9 "$G/test_cuda" --gtest_filter='Gpu.*' \
    >"$OUT/sanitizer_$tool.txt" 2>&1
  echo "$tool exit $? ($(grep -c "ERROR SUMMARY: 0 errors" "$OUT/sanitizer_$tool.txt") clean summaries)"
done

echo "== ours: bloom-1b7 shape, random bf16 weights"
[ -f "$W/bloom-1b7/config.json" ] ||
  "$G/make_random_checkpoint" --shape bloom-1b7 --dtype bf16 --tokenizer "$TOK" -o "$W/bloom-1b7"
"$G/bench_engine" "$W/bloom-1b7" --device cuda | tee "$OUT/results.jsonl"

echo "== end to end: load + diagnose bloom-7b1 (checkpoint saved by transformers)"
if [ ! -f "$W/bloom-7b1/config.json" ]; then
  python3 .anchor/hf_e2e_anchor.py save bloom-7b1 "$W/bloom-7b1" && cp "$TOK" "$W/bloom-7b1/"
fi
for run in 1 2; do
  if t=$( { TIMEFORMAT=%R; time "$G/headsurgeon" diagnose "$W/bloom-7b1" --device cuda -q \
              --json "$W/diag7b1.json" >/dev/null 2>"$OUT/e2e_err.txt"; } 2>&1); then
    echo "{\"what\":\"e2e_7b1\",\"run\":$run,\"seconds\":$t}" | tee -a "$OUT/results.jsonl"
  else
    echo "e2e run $run failed: $(cat "$OUT/e2e_err.txt")"
  fi
done
for run in 1 2; do python3 .anchor/hf_e2e_anchor.py run "$W/bloom-7b1" cuda; done 2>&1 | tee "$OUT/hf_e2e.txt"

echo "== HF anchor (bloom-1b7)"
OUT=$OUT python3 .anchor/hf_anchor.py bloom-1b7 >"$OUT/anchor.txt" 2>&1
grep -E "bloom-1b7" "$OUT/anchor.txt"
python3 bench/hf_ppl_anchor.py bloom-1b7 2>"$OUT/hf_ppl_err.txt" | tee -a "$OUT/results.jsonl"

echo "== table"
python3 - "$OUT" <<'PY'
import json, re, sys, os
out = sys.argv[1]
results = [json.loads(l) for l in open(os.path.join(out, "results.jsonl")) if l.startswith("{")]
get = lambda w, k: next((o[k] for o in results if o["what"] == w), None)
try:
    hf = json.load(open(os.path.join(out, "hf_anchor.json")))["bloom-1b7"]
except Exception:
    hf = {}
e2e = [o["seconds"] for o in results if o["what"] == "e2e_7b1"]
hf_total = re.findall(r"total[^0-9]*([0-9.]+)", open(os.path.join(out, "hf_e2e.txt")).read())
rows = [("diagnose 1b7 T=60 (ms)", hf.get("diag_ms"), get("diagnose", "ms"), "lower"),
        ("greedy decode 1b7 (tok/s)", hf.get("gen_tok_s"), get("decode", "tok_s"), "higher"),
        ("ppl 1b7 8x512 (tok/s)", get("hf_ppl", "tok_s"), get("ppl", "tok_s"), "higher"),
        ("load+diagnose 7b1 e2e (s)", float(hf_total[-1]) if hf_total else None,
         e2e[-1] if e2e else None, "lower")]
print(f"{'work':30} {'HF':>10} {'ours':>10} {'speed-up':>9}")
for name, a, b, better in rows:
    r = (a / b if better == "lower" else b / a) if a and b else None
    f = lambda x: f"{x:10.2f}" if x is not None else f"{'-':>10}"
    print(f"{name:30} {f(a)} {f(b)} {(f'{r:8.1f}x' if r else '        -')}")
PY
