#!/usr/bin/env bash
# Run HERE before the device call (build here, run there: the GPU machine has no Debian -dev
# libraries). Builds with CUDA, then
# stages what the GPU machine needs into .gpu/bin.tar.xz (binaries + the non-CUDA shared
# libraries they use; ~10 MB compressed, under the 64 MiB a call may carry) and the HF anchor
# scripts into .anchor/, both git-ignored (.gitignore):
#   run(command="bench/gpu_run.sh", carry=[".gpu", ".anchor"])
# The GPU machine has glibc 2.39, libstdc++ and CUDA 13 (libcublas.so.13) but none of Debian's
# libraries: whatever else the binaries load is bundled, and ldd proves nothing is left out.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh -DHEADSURGEON_CUDA=ON
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib"
bins=(headsurgeon make_random_checkpoint bench_engine bench_surgery bench_attention test_cuda test_cuda_surgery test_cuda_attention)
cp build/headsurgeon build/make_random_checkpoint build/bench/bench_engine build/bench/bench_surgery \
  build/bench/bench_attention build/tests/test_cuda build/tests/test_cuda_surgery \
  build/tests/test_cuda_attention "$stage/"
# What the GPU machine provides (glibc's libraries, libresolv among them, must come from one
# glibc); every other library must resolve into the bundle.
system='^(linux-vdso\.so\.1|(/.*/)?ld-linux-x86-64\.so\.2|libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libresolv\.so\.2|libstdc\+\+\.so\.6|libgcc_s\.so\.1|libcublas\.so\.13|libcublasLt\.so\.13)$'
# Everything else the binaries load, as ldd resolves it here (whole closure): PCRE2 and utf8proc
# (the tokenizer), OpenMP's runtime, libcurl and the libraries it loads (TLS, HTTP/2, ...; the
# hub client); OpenBLAS is linked statically.
for b in "${bins[@]}"; do
  while read -r name _ path _; do
    [[ "$name" =~ $system || "$path" != /* ]] && continue
    cp -Ln "$path" "$stage/lib/"
  done < <(ldd "$stage/$b" | grep -v "statically linked")
done
for b in "${bins[@]}"; do strip "$stage/$b"; done
missing=0
for f in "${bins[@]/#/$stage/}" "$stage"/lib/*; do
  while read -r name _ path _; do
    [[ "$name" =~ $system || "$path" == "$stage/lib/"* ]] && continue
    echo "gpu_prepare: $(basename "$f") needs $name ($path), neither bundled nor on the GPU machine"
    missing=1
  done < <(LD_LIBRARY_PATH="$stage/lib" ldd "$f" | grep -v "statically linked")
  # Symbol versions: nothing newer than the GPU machine's glibc 2.39.
  glibc=$(objdump -T "$f" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  if [ "$(printf '%s\n' "${glibc#GLIBC_}" 2.39 | sort -V | tail -1)" != 2.39 ]; then
    echo "gpu_prepare: $(basename "$f") needs $glibc, newer than the GPU machine's 2.39"
    missing=1
  fi
done
[ "$missing" = 0 ] || exit 1

rm -rf .gpu && mkdir -p .gpu .anchor
tar cJf .gpu/bin.tar.xz -C "$stage" .
cp ../shared/anchor/*.py .anchor/ 2>/dev/null || echo "gpu_prepare: ../shared/anchor not found: no HF anchor"
du -sh .gpu .anchor
