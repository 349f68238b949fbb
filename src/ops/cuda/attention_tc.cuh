// What the attention launchers (attention.cu, attention_backward.cu) need of the tensor-core
// kernels (attention_tc.cu) to choose between them and the CUDA-core kernels by shape.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <initializer_list>

#include "ops/cuda/ops.cuh"

namespace hs::cuda {

// Below this many query rows per sequence the CUDA-core kernels stay: a block of the tensor-core
// forward covers 64 rows, so shorter inputs (the diagnosis prompt of T = 60, one decoding row)
// would leave most of its work masked.
constexpr int kTensorCoreMinRows = 64;

// Whether the tensor-core kernels take this head dimension and these fp32 operands (float4
// reads: 16-byte alignment), and are not switched off (HEADSURGEON_TENSOR_CORES=0).
bool tensor_core_attention_fits(int hd, std::initializer_list<const void*> ptrs);

// The dk/dv and dq kernels of the tensor-core backward, D given (alibi_attention_backward_tc).
template <class T>
void attention_backward_tc_kernels(float* dqkv, const float* dctx, const float* qkv,
                                   const float* kc, const float* vc, const float* lse,
                                   const float* D, const float* slopes, const AlibiParams& alibi,
                                   RowMap m, int H, int hd, int cap, int max_rows,
                                   const uint8_t* head_mask, cudaStream_t stream);

}  // namespace hs::cuda
