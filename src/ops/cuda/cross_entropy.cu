// Running log-sum-exp over vocabulary chunks, so the fp32 logits of the whole vocabulary
// (250,880 columns per row) never exist at once.
#include <cfloat>

#include "cuda/runtime.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/ops.cuh"

namespace hs::cuda {

namespace {

__global__ void lse_kernel(const float* logits, int Vc, int v0, const int32_t* target, float* m,
                           double* s, float* tgt) {
  __shared__ float fscratch[32];
  __shared__ double dscratch[32];
  const int row = blockIdx.x;
  const float* x = logits + int64_t(row) * Vc;
  float mx = -INFINITY;
  for (int c = threadIdx.x; c < Vc; c += blockDim.x) mx = fmaxf(mx, x[c]);
  mx = block_max(mx, fscratch);
  double sum = 0;
  for (int c = threadIdx.x; c < Vc; c += blockDim.x) sum += double(expf(x[c] - mx));
  sum = block_sum(sum, dscratch);
  if (threadIdx.x != 0) return;
  const float m_old = m[row], m_new = fmaxf(m_old, mx);
  s[row] = (m_old == -INFINITY ? 0.0 : s[row] * exp(double(m_old) - double(m_new))) +
           sum * exp(double(mx) - double(m_new));
  m[row] = m_new;
  const int t = target ? target[row] : -1;
  if (t >= v0 && t < v0 + Vc) tgt[row] = x[t - v0];
}

}  // namespace

void logsumexp_update(const float* logits, int N, int Vc, int v0, const int32_t* target, float* m,
                      double* s, float* tgt, cudaStream_t stream) {
  if (N == 0) return;
  lse_kernel<<<N, 256, 0, stream>>>(logits, Vc, v0, target, m, s, tgt);
  HS_CUDA(cudaGetLastError());
}

}  // namespace hs::cuda
