// Element-wise and reduction helpers of surgical training: fp32 gradients into the GEMM input
// type, trained slices back into the working weights, MPT's clamp gradient, and the column sums
// of a bias slice's gradient.
#include <algorithm>

#include "cuda/runtime.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/ops.cuh"

namespace hs::cuda {

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) { return int(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)); }

template <class W>
__global__ void convert_kernel(W* out, const float* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f32<W>(in[i]);
}

template <class W>
__global__ void copy_cols_kernel(W* dst, int ld_dst, const float* src, int C, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i / C * ld_dst + i % C] = from_f32<W>(src[i]);
}

__global__ void clamp_backward_kernel(float* dqkv, const float* raw, const float* bias, int64_t n,
                                      int C, float c) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float x = bias ? raw[i] + bias[i % C] : raw[i];
    if (!(x >= -c && x <= c)) dqkv[i] = 0.0f;
  }
}

// Block (32 columns, 8 row lanes): lane y sums rows y, y + 8, ... of its column, then lane 0 adds
// the 8 partial sums in order. The order depends only on N: deterministic.
constexpr int kSumCols = 32, kSumLanes = 8;
__global__ void column_sums_kernel(float* out, const float* in, int ld, int N, int C) {
  __shared__ float part[kSumLanes][kSumCols];
  const int c = blockIdx.x * kSumCols + threadIdx.x;
  float s = 0;
  if (c < C)
    for (int r = threadIdx.y; r < N; r += kSumLanes) s += in[int64_t(r) * ld + c];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y != 0 || c >= C) return;
  float total = 0;
  for (int y = 0; y < kSumLanes; ++y) total += part[y][threadIdx.x];
  out[c] += total;
}

}  // namespace

template <class W>
void to_weight_type(W* out, const float* in, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  convert_kernel<W><<<blocks_for(n), kThreads, 0, stream>>>(out, in, n);
  HS_CUDA(cudaGetLastError());
}

template <class W>
void copy_rows(W* dst, const float* src, int64_t n, cudaStream_t stream) {
  to_weight_type<W>(dst, src, n, stream);
}

template <class W>
void copy_cols(W* dst, int ld_dst, const float* src, int R, int C, cudaStream_t stream) {
  const int64_t n = int64_t(R) * C;
  if (n == 0) return;
  copy_cols_kernel<W><<<blocks_for(n), kThreads, 0, stream>>>(dst, ld_dst, src, C, n);
  HS_CUDA(cudaGetLastError());
}

void clamp_backward(float* dqkv, const float* qkv_raw, const float* bias, int N, int C, float c,
                    cudaStream_t stream) {
  const int64_t n = int64_t(N) * C;
  if (n == 0) return;
  clamp_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dqkv, qkv_raw, bias, n, C, c);
  HS_CUDA(cudaGetLastError());
}

void column_sums(float* out, const float* in, int ld, int N, int C, cudaStream_t stream) {
  if (C == 0) return;
  column_sums_kernel<<<(C + kSumCols - 1) / kSumCols, dim3(kSumCols, kSumLanes), 0, stream>>>(
      out, in, ld, N, C);
  HS_CUDA(cudaGetLastError());
}

#define HS_INSTANTIATE(W)                                                   \
  template void to_weight_type<W>(W*, const float*, int64_t, cudaStream_t); \
  template void copy_rows<W>(W*, const float*, int64_t, cudaStream_t);      \
  template void copy_cols<W>(W*, int, const float*, int, int, cudaStream_t);
HS_INSTANTIATE(float)
HS_INSTANTIATE(__nv_bfloat16)
HS_INSTANTIATE(__half)
#undef HS_INSTANTIATE

}  // namespace hs::cuda
