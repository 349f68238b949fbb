// Matrix products on the GPU through cuBLAS, in the row-major terms of the CPU code.
#pragma once

#include <cublas_v2.h>

namespace hs::cuda {

// C[M, N] = alpha * op(A) @ op(B) + beta * C, row-major with leading dimensions, exactly as
// cpu::gemm: op(A) is [M, K] (A stored [K, M] when transA), op(B) is [K, N] (B stored [N, K]
// when transB). A and B are W (float, __nv_bfloat16 or __half); C and the accumulation are
// fp32, never TF32, so fp32 inputs give fp32 products.
template <class W>
void gemm(cublasHandle_t h, bool transA, bool transB, int M, int N, int K, float alpha, const W* A,
          int lda, const W* B, int ldb, float beta, float* C, int ldc);

// out[N, OC] (row stride ldo, fp32) = alpha * inp[N, IC] @ Wt[OC, IC]^T: the forward's product,
// gemm(false, true, ...). alpha is applied once to each fp32 sum, in the GEMM's epilogue (MPT's
// logit scale).
template <class W>
void gemm_rows(cublasHandle_t h, float* out, int ldo, const W* inp, const W* Wt, int N, int IC,
               int OC, float alpha = 1.0f);

// Throws hs::Error("cublas: <what>: <status>") unless status is CUBLAS_STATUS_SUCCESS.
void check_blas(cublasStatus_t status, const char* what);

}  // namespace hs::cuda
