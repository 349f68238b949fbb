#!/usr/bin/env bash
# Fuzzes the parsers of user input (fuzz/, one libFuzzer target each) under ASan and UBSan.
#   scripts/fuzz.sh TARGET SECONDS [libFuzzer options]   one target, for SECONDS
#   scripts/fuzz.sh all SECONDS                          every target, one after the other
# Builds them with clang in build-fuzz (CUDA off) and starts each from its seeds tests/fuzz/TARGET/
# copied to build-fuzz/corpus/TARGET (the runs grow that copy, never the repository), with
# tests/fuzz/TARGET.dict when there is one. Exit 0 when nothing was found; otherwise 1, with the
# path of each reproducer (rerun one with build-fuzz/fuzz/fuzz_TARGET FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=(safetensors config tokenizer encode plan diagnosis corpus state trajectory)

usage() {
  echo "usage: scripts/fuzz.sh TARGET|all SECONDS [libFuzzer options]" >&2
  echo "targets: ${TARGETS[*]}" >&2
  exit 2
}
[ $# -ge 2 ] || usage
target=$1 seconds=$2
shift 2
[[ $seconds =~ ^[0-9]+$ ]] || usage
if [ "$target" = all ]; then
  run=("${TARGETS[@]}")
elif [[ " ${TARGETS[*]} " == *" $target "* ]]; then
  run=("$target")
else
  usage
fi
scripts/install-deps.sh --fuzz

# -O2 without NDEBUG, as the release build: the asserts it keeps (nlohmann's among them) stay on.
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DHEADSURGEON_FUZZ=ON -DHEADSURGEON_CUDA=OFF \
  -DHEADSURGEON_TESTS=OFF -DHEADSURGEON_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 -g" >/dev/null
cmake --build build-fuzz -j "${JOBS:-2}" --target "${run[@]/#/fuzz_}"

export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
found=()
for t in "${run[@]}"; do
  corpus=build-fuzz/corpus/$t findings=build-fuzz/findings/$t scratch=build-fuzz/tmp/$t
  rm -rf "$corpus" "$scratch"
  mkdir -p "$corpus" "$findings" "$scratch"
  cp tests/fuzz/"$t"/* "$corpus"/
  dict=()
  [ -f tests/fuzz/"$t".dict ] && dict=(-dict=tests/fuzz/"$t".dict)
  echo "== fuzz_$t for ${seconds}s"
  log=build-fuzz/fuzz_$t.log
  # One process (no -jobs): the machine's cores are shared. A 10 s input is a hang.
  rc=0
  TMPDIR=$PWD/$scratch build-fuzz/fuzz/fuzz_"$t" "$corpus" -max_total_time="$seconds" \
    -timeout=10 -artifact_prefix="$findings"/ -print_final_stats=1 "${dict[@]}" "$@" \
    2>"$log" || rc=$?
  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" |
    tr '\n' ' ' || true
  echo
  if [ $rc -ne 0 ]; then
    tail -n 40 "$log"
    units=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log")
    [ -n "$units" ] || units="$log (exit $rc, no reproducer written)"
    while IFS= read -r u; do
      echo "fuzz_$t found: $u"
      found+=("$u")
    done <<<"$units"
  fi
  rm -rf "$scratch"
done
if [ ${#found[@]} -gt 0 ]; then
  echo "fuzz.sh: ${#found[@]} finding(s):"
  printf '  %s\n' "${found[@]}"
  exit 1
fi
echo "fuzz.sh: nothing found"
