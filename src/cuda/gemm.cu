#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>

#include "cuda/gemm.h"
#include "cuda/gemv.cuh"
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

// gemm_rows's epilogue on the GEMV path: the product as it is.
struct StoreRows {
  float* out;
  int ldo;
  __device__ void operator()(int r, int o, float v) const { out[int64_t(r) * ldo + o] = v; }
};

}  // namespace

template <class W>
void gemm_rows(cublasHandle_t h, float* out, int ldo, const W* inp, const W* Wt, int N, int IC,
               int OC, float alpha) {
  cudaStream_t s = nullptr;
  check_blas(cublasGetStream(h, &s), "cublasGetStream");
  if (gemv_rows(s, inp, Wt, N, IC, OC, alpha, StoreRows{out, ldo})) {
    if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess)
      throw Error("cuda", std::string("gemv_rows: ") + cudaGetErrorString(e));
    return;
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
