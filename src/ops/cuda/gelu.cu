// Bias + GELU after the MLP's first GEMM, writing the second GEMM's input type, and its input
// gradient. The GELU and its derivative are ops/gelu.h's, so both devices compute the same
// functions in each family's form.
#include "cuda/runtime.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/ops.cuh"

namespace hs::cuda {

namespace {

template <class W>
__global__ void gelu_kernel(W* out, const float* h, const float* bias, int64_t n, int C,
                            Gelu kind) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float x = bias ? h[i] + bias[i % C] : h[i];
    out[i] = from_f32<W>(gelu<float>(x, kind));
  }
}

__global__ void gelu_backward_kernel(float* dinp, const float* dout, const float* h,
                                     const float* bias, int64_t n, int C, Gelu kind) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float x = bias ? h[i] + bias[i % C] : h[i];
    dinp[i] = dout[i] * gelu_grad<float>(x, kind);
  }
}

}  // namespace

void gelu_backward(float* dinp, const float* dout, const float* h, const float* bias, int N, int C,
                   Gelu kind, cudaStream_t stream) {
  const int64_t n = int64_t(N) * C;
  if (n == 0) return;
  const int threads = 256;
  const int blocks = int(std::min<int64_t>((n + threads - 1) / threads, 65535));
  gelu_backward_kernel<<<blocks, threads, 0, stream>>>(dinp, dout, h, bias, n, C, kind);
  HS_CUDA(cudaGetLastError());
}

template <class W>
void gelu_forward(W* out, const float* h, const float* bias, int N, int C, Gelu kind,
                  cudaStream_t stream) {
  const int64_t n = int64_t(N) * C;
  if (n == 0) return;
  const int threads = 256;
  const int blocks = int(std::min<int64_t>((n + threads - 1) / threads, 65535));
  gelu_kernel<W><<<blocks, threads, 0, stream>>>(out, h, bias, n, C, kind);
  HS_CUDA(cudaGetLastError());
}

#define HS_INSTANTIATE(W) \
  template void gelu_forward<W>(W*, const float*, const float*, int, int, Gelu, cudaStream_t);
HS_INSTANTIATE(float)
HS_INSTANTIATE(__nv_bfloat16)
HS_INSTANTIATE(__half)
#undef HS_INSTANTIATE

}  // namespace hs::cuda
