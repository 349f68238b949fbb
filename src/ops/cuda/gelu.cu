// Bias + GELU after the MLP's first GEMM, writing the second GEMM's input type, and its input
// gradient. The GELU and its derivative are ops/gelu.h's, so both devices compute the same
// functions in each family's form.
#include "cuda/gemm.h"
#include "cuda/gemv.cuh"
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

// linear_gelu_forward's epilogue on the GEMV path: gelu_kernel's arithmetic on each product.
template <class W>
struct GeluRows {
  W* out;
  float* h32;
  const float* bias;
  int C;
  Gelu kind;
  __device__ void operator()(int r, int o, float v) const {
    const int64_t i = int64_t(r) * C + o;
    h32[i] = v;
    out[i] = from_f32<W>(gelu<float>(bias ? v + bias[o] : v, kind));
  }
};

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

template <class W>
void linear_gelu_forward(W* out, float* h32, cublasHandle_t blas, const W* inp, const W* Wt,
                         const float* bias, int N, int IC, int C, Gelu kind, cudaStream_t stream) {
  if (gemv_rows(stream, inp, Wt, N, IC, C, 1.0f, GeluRows<W>{out, h32, bias, C, kind})) {
    HS_CUDA(cudaGetLastError());
    return;
  }
  gemm_rows<W>(blas, h32, C, inp, Wt, N, IC, C);
  gelu_forward<W>(out, h32, bias, N, C, kind, stream);
}

#define HS_INSTANTIATE(W)                                                                      \
  template void gelu_forward<W>(W*, const float*, const float*, int, int, Gelu, cudaStream_t); \
  template void linear_gelu_forward<W>(W*, float*, cublasHandle_t, const W*, const W*,         \
                                       const float*, int, int, int, Gelu, cudaStream_t);
HS_INSTANTIATE(float)
HS_INSTANTIATE(__nv_bfloat16)
HS_INSTANTIATE(__half)
#undef HS_INSTANTIATE

}  // namespace hs::cuda
