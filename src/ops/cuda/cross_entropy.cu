// Running log-sum-exp over vocabulary chunks, so the fp32 logits of the whole vocabulary
// (250,880 columns per row) never exist at once, and the cross-entropy gradient chunk by chunk.
#include <cfloat>
#include <cstdint>

#include "cuda/runtime.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/ops.cuh"

namespace hs::cuda {

namespace {

// A thread's running max and sum of exp(x - max) over its columns, one pass: a new max rescales
// the sum. (Two passes, max then sum, read each 16k-column chunk row twice, the second time mostly
// from memory again: 251 µs per bloom-1b7 chunk of 4,096 rows, ~2x its one-read time; NOTES.)
struct RunningSum {
  float m = -INFINITY;
  double s = 0;
  __device__ void add(float x) {
    if (x > m) {
      s = (m == -INFINITY ? 0.0 : s * double(expf(m - x))) + 1.0;
      m = x;
    } else {
      s += double(expf(x - m));
    }
  }
};

template <bool kVec4>
__global__ void lse_kernel(const float* logits, int Vc, int v0, const int32_t* target, float* m,
                           double* s, float* tgt) {
  __shared__ float fscratch[32];
  __shared__ double dscratch[32];
  const int row = blockIdx.x;
  const float* x = logits + int64_t(row) * Vc;
  RunningSum r;
  if constexpr (kVec4) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int c = threadIdx.x; c < Vc / 4; c += blockDim.x) {
      const float4 v = x4[c];
      r.add(v.x), r.add(v.y), r.add(v.z), r.add(v.w);
    }
  } else {
    for (int c = threadIdx.x; c < Vc; c += blockDim.x) r.add(x[c]);
  }
  const float mx = block_max(r.m, fscratch);
  const double sum =
      block_sum(r.m == -INFINITY ? 0.0 : r.s * exp(double(r.m) - double(mx)), dscratch);
  if (threadIdx.x != 0) return;
  const float m_old = m[row], m_new = fmaxf(m_old, mx);
  s[row] = (m_old == -INFINITY ? 0.0 : s[row] * exp(double(m_old) - double(m_new))) +
           sum * exp(double(mx) - double(m_new));
  m[row] = m_new;
  const int t = target ? target[row] : -1;
  if (t >= v0 && t < v0 + Vc) tgt[row] = x[t - v0];
}

__global__ void lse_finish_kernel(float* lse, const float* m, const double* s, int N) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < N) lse[i] = float(double(m[i]) + log(s[i]));
}

// One block per row, in place.
__global__ void cross_entropy_backward_kernel(float* logits, const float* lse,
                                              const int32_t* target, const float* scale, int Vc,
                                              int v0) {
  const int row = blockIdx.x, t = target[row];
  float* x = logits + int64_t(row) * Vc;
  if (t < 0) {
    for (int v = threadIdx.x; v < Vc; v += blockDim.x) x[v] = 0.0f;
    return;
  }
  const float l = lse[row], sc = scale[row];
  for (int v = threadIdx.x; v < Vc; v += blockDim.x) {
    // Product, then subtraction, each rounded, as the CPU twin computes them (no FMA).
    const float d = __fmul_rn(sc, expf(x[v] - l));
    x[v] = v0 + v == t ? d - sc : d;
  }
}

}  // namespace

void logsumexp_finish(float* lse, const float* m, const double* s, int N, cudaStream_t stream) {
  if (N == 0) return;
  lse_finish_kernel<<<(N + 255) / 256, 256, 0, stream>>>(lse, m, s, N);
  HS_CUDA(cudaGetLastError());
}

void cross_entropy_backward(float* logits, const float* lse, const int32_t* target,
                            const float* scale, int N, int Vc, int v0, cudaStream_t stream) {
  if (N == 0 || Vc == 0) return;
  cross_entropy_backward_kernel<<<N, 256, 0, stream>>>(logits, lse, target, scale, Vc, v0);
  HS_CUDA(cudaGetLastError());
}

void logsumexp_update(const float* logits, int N, int Vc, int v0, const int32_t* target, float* m,
                      double* s, float* tgt, cudaStream_t stream) {
  if (N == 0) return;
  // float4 reads where every row starts 16-byte aligned.
  if (Vc % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0)
    lse_kernel<true><<<N, 256, 0, stream>>>(logits, Vc, v0, target, m, s, tgt);
  else
    lse_kernel<false><<<N, 256, 0, stream>>>(logits, Vc, v0, target, m, s, tgt);
  HS_CUDA(cudaGetLastError());
}

}  // namespace hs::cuda
