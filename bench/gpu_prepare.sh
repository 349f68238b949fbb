#!/usr/bin/env bash
# Run HERE before the device call (DESIGN §7: build here, run there). Builds with CUDA, then
# stages what the GPU machine needs into .gpu/bin.tar.xz (binaries + the two non-CUDA shared
# libraries they use; 85 MB stripped, ~7 MB compressed, under the 64 MiB a call may carry) and
# the HF anchor scripts into .anchor/, both git-ignored:
#   run(command="bench/gpu_run.sh", carry=[".gpu", ".anchor"])
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh -DHEADSURGEON_CUDA=ON
stage=$(mktemp -d)
mkdir -p "$stage/lib"
cp build/headsurgeon build/make_random_checkpoint build/bench/bench_engine build/tests/test_cuda "$stage/"
for lib in libpcre2-8.so.0 libgomp.so.1; do cp -L "/lib/x86_64-linux-gnu/$lib" "$stage/lib/"; done
strip "$stage"/headsurgeon "$stage"/make_random_checkpoint "$stage"/bench_engine "$stage"/test_cuda
rm -rf .gpu && mkdir -p .gpu .anchor
tar cJf .gpu/bin.tar.xz -C "$stage" .
rm -rf "$stage"
cp ../shared/anchor/*.py .anchor/ 2>/dev/null || echo "gpu_prepare: ../shared/anchor not found: no HF anchor"
mkdir -p .git/info
for d in .gpu/ .anchor/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude; done
du -sh .gpu .anchor
