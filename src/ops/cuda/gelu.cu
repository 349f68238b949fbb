// Bias + tanh-GELU after the MLP's first GEMM, writing the second GEMM's input type.
#include "cuda/runtime.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/ops.cuh"

namespace hs::cuda {

namespace {

template <class W>
__global__ void bias_gelu_kernel(W* out, const float* h, const float* bias, int64_t n, int C) {
  constexpr float kS = 0.7978845608028654f, kC = 0.044715f;  // sqrt(2/pi), as cpu::gelu_forward
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float x = h[i] + bias[i % C];
    out[i] = from_f32<W>(0.5f * x * (1.0f + tanhf(kS * x * (1.0f + kC * x * x))));
  }
}

}  // namespace

template <class W>
void bias_gelu(W* out, const float* h, const float* bias, int N, int C, cudaStream_t stream) {
  const int64_t n = int64_t(N) * C;
  if (n == 0) return;
  const int threads = 256;
  const int blocks = int(std::min<int64_t>((n + threads - 1) / threads, 65535));
  bias_gelu_kernel<W><<<blocks, threads, 0, stream>>>(out, h, bias, n, C);
  HS_CUDA(cudaGetLastError());
}

template void bias_gelu<float>(float*, const float*, const float*, int, int, cudaStream_t);
template void bias_gelu<__nv_bfloat16>(__nv_bfloat16*, const float*, const float*, int, int,
                                       cudaStream_t);
template void bias_gelu<__half>(__half*, const float*, const float*, int, int, cudaStream_t);

}  // namespace hs::cuda
