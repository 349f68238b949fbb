#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda/gemm.h"
#include "util/error.h"

namespace hs::cuda {

namespace {
template <class W>
constexpr cudaDataType_t data_type();
template <>
constexpr cudaDataType_t data_type<float>() {
  return CUDA_R_32F;
}
template <>
constexpr cudaDataType_t data_type<__nv_bfloat16>() {
  return CUDA_R_16BF;
}
template <>
constexpr cudaDataType_t data_type<__half>() {
  return CUDA_R_16F;
}
}  // namespace

void check_blas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error("cublas", std::string(what) + ": " + cublasGetStatusString(status));
}

template <class W>
void gemm(cublasHandle_t h, bool transA, bool transB, int M, int N, int K, float alpha, const W* A,
          int lda, const W* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  // cuBLAS is column-major, where a row-major matrix reads as its transpose: C^T [N, M] =
  // op(B)^T op(A)^T, so B comes first and each operand keeps its own transposition flag.
  check_blas(cublasGemmEx(h, transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N,
                          N, M, K, &alpha, B, data_type<W>(), ldb, A, data_type<W>(), lda, &beta, C,
                          CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "cublasGemmEx");
}

namespace {

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

constexpr int kGemvWarps = 8;

// out[r, o] = alpha * inp[r, :] . Wt[o, :] for the n <= NR rows of a decoding step: one warp per
// output column o streams its weight row once in 16-byte reads (8 values), the NR input rows
// coming from L1/L2. cuBLAS at M = 1 runs split-K kernels and a reduction at about half the
// memory bandwidth (NOTES, 2026-11-26: products were 58 % of a bloom-1b7 decoding step).
template <class W, int NR>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_rows_kernel(float* out, int ldo, const W* inp, const W* Wt, int n, int IC, int OC,
                     float alpha) {
  const int o = blockIdx.x * kGemvWarps + int(threadIdx.x >> 5), lane = threadIdx.x & 31;
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
    if (lane == 0) out[int64_t(r) * ldo + o] = alpha * v;
  }
}

template <class W, int NR>
void launch_gemv(cudaStream_t s, float* out, int ldo, const W* inp, const W* Wt, int n, int IC,
                 int OC, float alpha) {
  gemv_rows_kernel<W, NR><<<(OC + kGemvWarps - 1) / kGemvWarps, kGemvWarps * 32, 0, s>>>(
      out, ldo, inp, Wt, n, IC, OC, alpha);
}

// Rows of a decoding step (up to 8: generate --n 8) of 16-bit weights take gemv_rows_kernel.
template <class W>
bool gemv_fits(int N, int IC, const W* inp, const W* Wt) {
  if constexpr (std::is_same_v<W, float>) return false;
  return N >= 1 && N <= 8 && IC % 8 == 0 &&
         (reinterpret_cast<uintptr_t>(inp) | reinterpret_cast<uintptr_t>(Wt)) % 16 == 0;
}

}  // namespace

template <class W>
void gemm_rows(cublasHandle_t h, float* out, int ldo, const W* inp, const W* Wt, int N, int IC,
               int OC, float alpha) {
  if constexpr (!std::is_same_v<W, float>) {
    if (OC > 0 && gemv_fits(N, IC, inp, Wt)) {
      cudaStream_t s = nullptr;
      check_blas(cublasGetStream(h, &s), "cublasGetStream");
      if (N == 1)
        launch_gemv<W, 1>(s, out, ldo, inp, Wt, N, IC, OC, alpha);
      else if (N == 2)
        launch_gemv<W, 2>(s, out, ldo, inp, Wt, N, IC, OC, alpha);
      else if (N <= 4)
        launch_gemv<W, 4>(s, out, ldo, inp, Wt, N, IC, OC, alpha);
      else
        launch_gemv<W, 8>(s, out, ldo, inp, Wt, N, IC, OC, alpha);
      if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess)
        throw Error("cuda", std::string("gemv_rows: ") + cudaGetErrorString(e));
      return;
    }
  }
  gemm<W>(h, false, true, N, OC, IC, alpha, inp, IC, Wt, IC, 0.0f, out, ldo);
}

#define HS_INSTANTIATE(W)                                                                          \
  template void gemm<W>(cublasHandle_t, bool, bool, int, int, int, float, const W*, int, const W*, \
                        int, float, float*, int);                                                  \
  template void gemm_rows<W>(cublasHandle_t, float*, int, const W*, const W*, int, int, int, float);
HS_INSTANTIATE(float)
HS_INSTANTIATE(__nv_bfloat16)
HS_INSTANTIATE(__half)
#undef HS_INSTANTIATE

}  // namespace hs::cuda
