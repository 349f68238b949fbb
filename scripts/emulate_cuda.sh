#!/usr/bin/env bash
# The GPU tests without a GPU: the CUDA code (src/cuda, src/ops/cuda, src/engine/cuda) built as
# host C++ against the CPU emulation of the CUDA runtime (tools/cuda_emu: one fiber per CUDA
# thread, real barriers and warp shuffles, tensor-core mma on fragments, streams, graphs, cuBLAS
# GemmEx), then test_cuda, test_cuda_attention and test_cuda_surgery run on it: every kernel
# against its CPU twin, the engine against the golden data and the CPU engine, the surgery.
# Correctness only (an emulated kernel says nothing about its speed). Needs the CUDA toolkit's
# headers, no GPU and no nvcc run; skips, saying so, without them. Builds the host libraries
# first when build/ has none (scripts/build.sh). The demo model's 40 bf16 steps (15 minutes
# emulated) run only with --all. Other arguments go to every test binary (--gtest_filter=...).
set -euo pipefail
cd "$(dirname "$0")/.."
inc=${CUDA_INC:-/usr/local/cuda/include}
if [ ! -f "$inc/cuda_runtime.h" ]; then
  echo "emulate_cuda: no CUDA headers in $inc (set CUDA_INC): skipped"
  exit 0
fi
skip=--gtest_filter=-GpuSurgery.DemoModelFortyStepsTrackTheCpu
if [ "${1:-}" = --all ]; then
  skip=
  shift
fi
scripts/install-deps.sh --emulate
[ -f build/libhs_util.a ] || scripts/build.sh
make -f tools/cuda_emu/Makefile SRC=. BUILD=build O=build-emu CUDA_INC="$inc" -j"$(nproc)" \
  --no-print-directory
rc=0
for t in test_cuda test_cuda_attention test_cuda_surgery; do
  echo "== $t (emulated)"
  code=0
  build-emu/$t ${skip:+"$skip"} "$@" >build-emu/$t.log 2>&1 || code=$?
  grep -E -A3 "HS_TEST_SEED|^\[  (PASSED|FAILED|SKIPPED) |Failure|^emu:" build-emu/$t.log || true
  [ $code = 0 ] || { echo "$t: exit $code (log: build-emu/$t.log)"; rc=1; }
done
exit $rc
