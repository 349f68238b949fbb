// Embedding gather, LayerNorm with the residual update that ends every sub-block fused in (one
// pass over the row instead of two), and LayerNorm's input gradient.
#include "cuda/runtime.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/ops.cuh"

namespace hs::cuda {

namespace {

template <class W>
__global__ void embed_kernel(float* x, const W* emb, const int32_t* ids, int d) {
  const int row = blockIdx.x;
  const W* e = emb + int64_t(ids[row]) * d;
  float* o = x + int64_t(row) * d;
  for (int c = threadIdx.x; c < d; c += blockDim.x) o[c] = to_f32(e[c]);
}

// One block per row, the row held in registers (PER values per thread): x is read once, and
// the residual update, both sums and the output follow from registers. Sums in double, as the
// CPU reference does: rows of 4096+ values lose digits in fp32 sums, and the kernel is bound by
// memory and latency, not by the adds.
template <class W, int PER>
__global__ void layernorm_rows_kernel(LayerNormArgs<W> a) {
  __shared__ double scratch[32];
  const int64_t off = int64_t(blockIdx.x) * a.d;
  float* x = a.x + off;
  const float* src = a.src ? a.src + off : x;
  float v[PER];
#pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int c = threadIdx.x + i * blockDim.x;
    if (c >= a.d) break;
    float t = src[c];
    if (a.y) t += a.bias ? a.y[off + c] + a.bias[c] : a.y[off + c];
    v[i] = t;
    if (a.src || a.y) x[c] = t;
  }
  if (!a.w) return;
  double s = 0;
#pragma unroll
  for (int i = 0; i < PER; ++i)
    if (threadIdx.x + i * blockDim.x < a.d) s += v[i];
  const double mu = block_sum(s, scratch) / a.d;
  double q = 0;
#pragma unroll
  for (int i = 0; i < PER; ++i)
    if (threadIdx.x + i * blockDim.x < a.d) q += (v[i] - mu) * (v[i] - mu);
  const float r = float(1.0 / sqrt(block_sum(q, scratch) / a.d + double(a.eps)));
  const float m = float(mu);
#pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int c = threadIdx.x + i * blockDim.x;
    if (c >= a.d) break;
    const float y = a.b ? (v[i] - m) * r * a.w[c] + a.b[c] : (v[i] - m) * r * a.w[c];
    if (a.out) a.out[off + c] = from_f32<W>(y);
    if (a.out32) a.out32[off + c] = y;
  }
}

// The same for rows too long for registers: three passes over x.
template <class W>
__global__ void layernorm_kernel(LayerNormArgs<W> a) {
  __shared__ double scratch[32];
  const int64_t off = int64_t(blockIdx.x) * a.d;
  float* x = a.x + off;
  if (a.src || a.y) {
    const float* src = a.src ? a.src + off : x;
    for (int c = threadIdx.x; c < a.d; c += blockDim.x) {
      float v = src[c];
      if (a.y) v += a.bias ? a.y[off + c] + a.bias[c] : a.y[off + c];
      x[c] = v;
    }
  }
  if (!a.w) return;
  double s = 0;
  for (int c = threadIdx.x; c < a.d; c += blockDim.x) s += x[c];
  const double mu = block_sum(s, scratch) / a.d;
  double v = 0;
  for (int c = threadIdx.x; c < a.d; c += blockDim.x) v += (x[c] - mu) * (x[c] - mu);
  const float r = float(1.0 / sqrt(block_sum(v, scratch) / a.d + double(a.eps)));
  const float m = float(mu);
  for (int c = threadIdx.x; c < a.d; c += blockDim.x) {
    const float y = a.b ? (x[c] - m) * r * a.w[c] + a.b[c] : (x[c] - m) * r * a.w[c];
    if (a.out) a.out[off + c] = from_f32<W>(y);
    if (a.out32) a.out32[off + c] = y;
  }
}

// One block per row: mean and rstd as layernorm_kernel computes them, then the CPU twin's
// double sums of dn = dout * w and dn * xhat, and dinp += (dn - mean(dn) - xhat mean(dn xhat))
// rstd.
__global__ void layernorm_backward_kernel(float* dinp, const float* dout, const float* inp,
                                          const float* w, int d, float eps) {
  __shared__ double scratch[32];
  const int64_t off = int64_t(blockIdx.x) * d;
  const float *x = inp + off, *go = dout + off;
  double s = 0;
  for (int c = threadIdx.x; c < d; c += blockDim.x) s += x[c];
  const double mu = block_sum(s, scratch) / d;
  double v = 0;
  for (int c = threadIdx.x; c < d; c += blockDim.x) v += (x[c] - mu) * (x[c] - mu);
  const float r = float(1.0 / sqrt(block_sum(v, scratch) / d + double(eps)));
  const float m = float(mu);
  double dmean = 0, dnorm_mean = 0;
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    const double n = double(x[c] - m) * r, dn = double(go[c]) * w[c];
    dmean += dn;
    dnorm_mean += dn * n;
  }
  dmean = block_sum(dmean, scratch) / d;
  dnorm_mean = block_sum(dnorm_mean, scratch) / d;
  float* gi = dinp + off;
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    const double n = double(x[c] - m) * r, dn = double(go[c]) * w[c];
    gi[c] += float((dn - dmean - n * dnorm_mean) * r);
  }
}

__global__ void gather_kernel(float* dst, const float* src, const int32_t* rows, int d) {
  const float* s = src + int64_t(rows[blockIdx.x]) * d;
  float* o = dst + int64_t(blockIdx.x) * d;
  for (int c = threadIdx.x; c < d; c += blockDim.x) o[c] = s[c];
}

int threads_for(int d) { return d >= 1024 ? 256 : d >= 256 ? 128 : 64; }

template <class W, int PER>
void launch_rows(const LayerNormArgs<W>& a, int threads, cudaStream_t stream) {
  layernorm_rows_kernel<W, PER><<<a.N, threads, 0, stream>>>(a);
}

}  // namespace

template <class W>
void embed_rows(float* x, const W* emb, const int32_t* ids, int N, int d, cudaStream_t stream) {
  if (N == 0) return;
  embed_kernel<W><<<N, threads_for(d), 0, stream>>>(x, emb, ids, d);
  HS_CUDA(cudaGetLastError());
}

template <class W>
void layernorm_forward(const LayerNormArgs<W>& a, cudaStream_t stream) {
  if (a.N == 0) return;
  // A few rows (a decoding step) get 1024 threads each: one row is then spread over a whole SM
  // instead of 256 threads (11.7 us per call for one 2048-wide row on an H100, 2026-11-26).
  const int threads = a.N <= 64 ? 1024 : threads_for(a.d);
  const int per = (a.d + threads - 1) / threads;
  if (per <= 2)
    launch_rows<W, 2>(a, threads, stream);
  else if (per <= 4)
    launch_rows<W, 4>(a, threads, stream);
  else if (per <= 8)
    launch_rows<W, 8>(a, threads, stream);
  else if (per <= 16)
    launch_rows<W, 16>(a, threads, stream);
  else
    layernorm_kernel<W><<<a.N, threads, 0, stream>>>(a);
  HS_CUDA(cudaGetLastError());
}

void layernorm_backward(float* dinp, const float* dout, const float* inp, const float* w, int N,
                        int C, float eps, cudaStream_t stream) {
  if (N == 0) return;
  layernorm_backward_kernel<<<N, threads_for(C), 0, stream>>>(dinp, dout, inp, w, C, eps);
  HS_CUDA(cudaGetLastError());
}

void gather_rows(float* dst, const float* src, const int32_t* rows, int n, int d,
                 cudaStream_t stream) {
  if (n == 0) return;
  gather_kernel<<<n, threads_for(d), 0, stream>>>(dst, src, rows, d);
  HS_CUDA(cudaGetLastError());
}

#define HS_INSTANTIATE(W)                                                                \
  template void embed_rows<W>(float*, const W*, const int32_t*, int, int, cudaStream_t); \
  template void layernorm_forward<W>(const LayerNormArgs<W>&, cudaStream_t);
HS_INSTANTIATE(float)
HS_INSTANTIATE(__nv_bfloat16)
HS_INSTANTIATE(__half)
#undef HS_INSTANTIATE

}  // namespace hs::cuda
