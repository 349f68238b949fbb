// Greedy decoding's choice made where the logits are: a decoding step then hands over one id per
// sequence instead of the vocabulary's logits (bloom-1b7: 1 MB per sequence and step to copy,
// then scan on the host).
#include <climits>

#include "cuda/runtime.h"
#include "ops/cuda/ops.cuh"

namespace hs::cuda {

namespace {

// (value, index) with the larger value first, the lower index among equals; NaN never wins.
struct Best {
  float v;
  int i;
};
__device__ __forceinline__ Best better(Best a, Best b) {
  return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
}

constexpr int kArgmaxThreads = 1024;

// One block per row: each thread scans its columns in increasing order, then the block reduces.
__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_kernel(int32_t* out, const float* x, int C) {
  __shared__ Best warp_best[kArgmaxThreads / 32];
  const float* row = x + int64_t(blockIdx.x) * C;
  Best b{-INFINITY, INT_MAX};
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = row[c];
    if (v > b.v || (v == b.v && b.i == INT_MAX)) b = {v, c};  // -inf counts; NaN does not
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const Best other{__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)};
    b = better(b, other);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_best[warp] = b;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < int(blockDim.x >> 5); ++w) b = better(b, warp_best[w]);
  // std::max_element's answer: a NaN in column 0 is never replaced, and a row of NaN gives 0.
  out[blockIdx.x] = (row[0] != row[0] || b.i == INT_MAX) ? 0 : b.i;
}

}  // namespace

void argmax_rows(int32_t* out, const float* x, int N, int C, cudaStream_t stream) {
  if (N == 0 || C == 0) return;
  argmax_kernel<<<N, kArgmaxThreads, 0, stream>>>(out, x, C);
  HS_CUDA(cudaGetLastError());
}

}  // namespace hs::cuda
