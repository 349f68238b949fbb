#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

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
void gemm_rows(cublasHandle_t h, float* out, int ldo, const W* inp, const W* Wt, int N, int IC,
               int OC, float alpha) {
  if (N == 0 || OC == 0) return;
  // Column-major view: out^T [OC, N] = Wt [IC, OC]^T . inp^T [IC, N].
  const float zero = 0.0f;
  check_blas(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, &alpha, Wt, data_type<W>(), IC,
                          inp, data_type<W>(), IC, &zero, out, CUDA_R_32F, ldo, CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT),
             "cublasGemmEx");
}

#define HS_INSTANTIATE(W) \
  template void gemm_rows<W>(cublasHandle_t, float*, int, const W*, const W*, int, int, int, float);
HS_INSTANTIATE(float)
HS_INSTANTIATE(__nv_bfloat16)
HS_INSTANTIATE(__half)
#undef HS_INSTANTIATE

}  // namespace hs::cuda
