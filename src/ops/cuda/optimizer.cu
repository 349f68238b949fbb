// The optimizer step of surgical training: AdamW, and the global gradient norm's sum of squares
// with the clipping scale. Compiled with -fmad=false (CMakeLists.txt): adamw_update's separate
// products and sums must round as on the CPU, where they are never contracted into FMAs, so that
// both devices' steps are bit-identical.
#include <algorithm>

#include "cuda/runtime.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/ops.cuh"

namespace hs::cuda {

namespace {

constexpr int kThreads = 256;
// Blocks of sum_squares' first pass: enough to fill the GPU, few enough for one block to sum.
constexpr int kMaxPartials = 1024;

int blocks_for(int64_t n) { return int(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)); }

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, AdamWStep s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    adamw_update(p[i], g[i], m[i], v[i], s);
}

// Each thread sums its grid-stride elements in order, each block its threads in a fixed order:
// the result depends on n only (the grid is a function of n).
__global__ void sum_squares_kernel(double* partial, const float* x, int64_t n) {
  __shared__ double scratch[32];
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    s += double(x[i]) * double(x[i]);
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(double* out, const double* partial, int n) {
  __shared__ double scratch[32];
  double s = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) *out = s;
}

__global__ void scale_kernel(float* x, int64_t n, float s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    x[i] *= s;
}

}  // namespace

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& s,
                cudaStream_t stream) {
  if (n == 0) return;
  adamw_kernel<<<blocks_for(n), kThreads, 0, stream>>>(p, g, m, v, n, s);
  HS_CUDA(cudaGetLastError());
}

void sum_squares(double* out, const float* x, int64_t n, cudaStream_t stream) {
  const int blocks = int(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, kMaxPartials));
  double* partial = nullptr;
  HS_CUDA(cudaMallocAsync(reinterpret_cast<void**>(&partial), sizeof(double) * blocks, stream));
  sum_squares_kernel<<<blocks, kThreads, 0, stream>>>(partial, x, n);
  sum_partials_kernel<<<1, kThreads, 0, stream>>>(out, partial, blocks);
  HS_CUDA(cudaGetLastError());
  HS_CUDA(cudaFreeAsync(partial, stream));
}

void scale_inplace(float* x, int64_t n, float s, cudaStream_t stream) {
  if (n == 0) return;
  scale_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, s);
  HS_CUDA(cudaGetLastError());
}

}  // namespace hs::cuda
