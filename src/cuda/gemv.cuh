// The matrix-vector product of a decoding step, as a kernel template whose epilogue is the
// caller's: gemm_rows stores the fp32 products; the MLP's up projection applies its bias and
// GELU and the qkv projection its bias, clamp and split into the caches in the same kernel
// (ops/cuda), so a decoding step launches two kernels fewer per layer and the products of those
// two never make a round trip through memory.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace hs::cuda {

namespace gemv_detail {

__device__ __forceinline__ void unpack8(float (&f)[8], const uint4& v, const __nv_bfloat16*) {
  const auto* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 x = __bfloat1622float2(h[k]);
    f[2 * k] = x.x;
    f[2 * k + 1] = x.y;
  }
}
__device__ __forceinline__ void unpack8(float (&f)[8], const uint4& v, const __half*) {
  const auto* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 x = __half22float2(h[k]);
    f[2 * k] = x.x;
    f[2 * k + 1] = x.y;
  }
}

constexpr int kWarps = 8;

// epi(r, o, alpha * inp[r, :] . Wt[o, :]) for the n <= NR rows of a decoding step: one warp per
// output column o streams its weight row once in 16-byte reads (8 values), the NR input rows
// coming from L1/L2. cuBLAS at M = 1 runs split-K kernels and a reduction at about half the
// memory bandwidth (NOTES, 2026-11-26: products were 58 % of a bloom-1b7 decoding step).
template <class W, int NR, class Epi>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_rows_kernel(const W* inp, const W* Wt, int n, int IC, int OC, float alpha, Epi epi) {
  const int o = blockIdx.x * kWarps + int(threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (o >= OC) return;
  const W* w = Wt + int64_t(o) * IC;
  float acc[NR];
#pragma unroll
  for (int r = 0; r < NR; ++r) acc[r] = 0;
#pragma unroll 4
  for (int i = 8 * lane; i < IC; i += 8 * 32) {
    float wf[8], xf[8];
    unpack8(wf, *reinterpret_cast<const uint4*>(w + i), w);
#pragma unroll
    for (int r = 0; r < NR; ++r) {
      if (r >= n) break;
      unpack8(xf, *reinterpret_cast<const uint4*>(inp + int64_t(r) * IC + i), inp);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[r] = fmaf(wf[k], xf[k], acc[r]);
    }
  }
#pragma unroll
  for (int r = 0; r < NR; ++r) {
    if (r >= n) break;
    float v = acc[r];
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    if (lane == 0) epi(r, o, alpha * v);
  }
}

template <class W, int NR, class Epi>
void launch_gemv(cudaStream_t s, const W* inp, const W* Wt, int n, int IC, int OC, float alpha,
                 const Epi& epi) {
  gemv_rows_kernel<W, NR, Epi>
      <<<(OC + kWarps - 1) / kWarps, kWarps * 32, 0, s>>>(inp, Wt, n, IC, OC, alpha, epi);
}

}  // namespace gemv_detail

// Whether gemv_rows takes N rows of IC: 1 to 8 rows (a decoding step; generate --n 8) of 16-bit
// weights, IC a multiple of 8 and both operands 16-byte aligned.
template <class W>
bool gemv_fits(int N, int IC, const W* inp, const W* Wt) {
  if constexpr (std::is_same_v<W, float>) return false;
  return N >= 1 && N <= 8 && IC % 8 == 0 &&
         (reinterpret_cast<uintptr_t>(inp) | reinterpret_cast<uintptr_t>(Wt)) % 16 == 0;
}

// epi(r, o, alpha * inp[r, :] . Wt[o, :]) for r < N, o < OC (each pair once, in no set order),
// enqueued on s, when gemv_fits; false, doing nothing, otherwise (always for fp32 weights). Epi
// is a trivially copyable struct with a __device__ operator()(int r, int o, float v) const.
template <class W, class Epi>
bool gemv_rows(cudaStream_t s, const W* inp, const W* Wt, int N, int IC, int OC, float alpha,
               const Epi& epi) {
  if constexpr (std::is_same_v<W, float>) {
    return false;
  } else {
    if (OC <= 0 || !gemv_fits(N, IC, inp, Wt)) return false;
    using namespace gemv_detail;
    if (N == 1)
      launch_gemv<W, 1>(s, inp, Wt, N, IC, OC, alpha, epi);
    else if (N == 2)
      launch_gemv<W, 2>(s, inp, Wt, N, IC, OC, alpha, epi);
    else if (N <= 4)
      launch_gemv<W, 4>(s, inp, Wt, N, IC, OC, alpha, epi);
    else
      launch_gemv<W, 8>(s, inp, Wt, N, IC, OC, alpha, epi);
    return true;
  }
}

}  // namespace hs::cuda
