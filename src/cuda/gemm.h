// Matrix products on the GPU through cuBLAS, in the row-major terms of the CPU code.
#pragma once

#include <cublas_v2.h>

namespace hs::cuda {

// out[N, OC] (row stride ldo, fp32) = alpha * inp[N, IC] @ Wt[OC, IC]^T with fp32 accumulation;
// inp and Wt are W (float, __nv_bfloat16 or __half). No TF32: fp32 weights give fp32 products.
// alpha is applied once to each fp32 sum, in the GEMM's epilogue (MPT's logit scale).
template <class W>
void gemm_rows(cublasHandle_t h, float* out, int ldo, const W* inp, const W* Wt, int N, int IC,
               int OC, float alpha = 1.0f);

// Throws hs::Error("cublas: <what>: <status>") unless status is CUBLAS_STATUS_SUCCESS.
void check_blas(cublasStatus_t status, const char* what);

}  // namespace hs::cuda
