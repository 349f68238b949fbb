// Element-wise helpers of surgical training: MPT's clamp gradient.
#include <algorithm>

#include "cuda/runtime.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/ops.cuh"

namespace hs::cuda {

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) { return int(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)); }

__global__ void clamp_backward_kernel(float* dqkv, const float* raw, const float* bias, int64_t n,
                                      int C, float c) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float x = bias ? raw[i] + bias[i % C] : raw[i];
    if (!(x >= -c && x <= c)) dqkv[i] = 0.0f;
  }
}

}  // namespace

void clamp_backward(float* dqkv, const float* qkv_raw, const float* bias, int N, int C, float c,
                    cudaStream_t stream) {
  const int64_t n = int64_t(N) * C;
  if (n == 0) return;
  clamp_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dqkv, qkv_raw, bias, n, C, c);
  HS_CUDA(cudaGetLastError());
}

}  // namespace hs::cuda
