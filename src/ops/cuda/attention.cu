// ALiBi attention on the GPU: the qkv split (bias, clamp, keys and values into the cache), and
// the causal attention with the diagnostic statistics computed in the same pass. Head offsets come
// from ops/qkv_layout.h and scores from ops/alibi.h, as on the CPU.
//
// Layout of the attention kernel (the CUDA-core one: fp32 models, short inputs, decoding; 16-bit
// models at 64 rows and more go to attention_tc.cu): one block per (32 query rows, head,
// sequence), 8 warps, each warp owning 4 of the rows (1 row and 8-row blocks for short inputs).
// Keys come in tiles of 32 staged in shared memory with the rows' queries. For a row, lane j scores
// key j of the tile (a full dot product against a padded K tile: no bank conflicts), the warp
// reduces the tile's max and sums, and each lane accumulates the output dimensions lane, lane+32,
// ... (DPL of them) with the probabilities broadcast by shuffles. Everything T x T stays in
// registers, one tile at a time.
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda/gemm.h"
#include "cuda/gemv.cuh"
#include "cuda/runtime.h"
#include "ops/cuda/attention_tc.cuh"
#include "ops/cuda/common.cuh"
#include "ops/cuda/ops.cuh"
#include "ops/online_softmax.h"
#include "ops/qkv_layout.h"
#include "util/error.h"

namespace hs::cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kTile = 32;        // keys per tile (one per lane)
constexpr int kShortRows = 256;  // up to this many rows per sequence: one row per warp

// Column c (internal layout) of row g of the fused qkv product, raw: its bias and clamp, then the
// query back in place or the key or value into its sequence's cache at the row's position.
__device__ __forceinline__ void split_one(float* qkv, float* kc, float* vc, const float* bias,
                                          float clip, const RowMap& m, int H, int hd, int cap,
                                          int g, int c, float raw) {
  const int h = c / (3 * hd), part = (c / hd) % 3, e = c % hd;  // c = qkv_row(h, part, hd) + e
  float v = bias ? raw + bias[c] : raw;
  if (clip > 0) v = fminf(fmaxf(v, -clip), clip);
  if (part == 0) {
    qkv[int64_t(g) * 3 * H * hd + c] = v;
    return;
  }
  const int b = m.row_seq[g];
  const int pos = m.past[b] + (g - m.q_row0[b]);
  float* cache = part == 1 ? kc : vc;
  cache[((int64_t(b) * H + h) * cap + pos) * hd + e] = v;
}

// One block per row (the row's sequence and position looked up once), its threads over the
// columns: a flat index over N x 3d cost a 64-bit division and remainder per element, and the
// kernel 126 µs per bloom-1b7 layer at 8 x 512 rows, twice its memory time (NOTES, 2026-11-26).
__global__ void qkv_split_kernel(float* qkv, float* kc, float* vc, const float* bias, float clip,
                                 RowMap m, int H, int hd, int cap) {
  const int ld = 3 * H * hd, g = blockIdx.x;
  const float* row = qkv + int64_t(g) * ld;
  for (int c = threadIdx.x; c < ld; c += blockDim.x)
    split_one(qkv, kc, vc, bias, clip, m, H, hd, cap, g, c, row[c]);
}

// linear_qkv_forward's epilogue on the GEMV path: the raw product into qkv (and qkv_raw), then
// qkv_split_kernel's work on it.
struct SplitRows {
  float *qkv, *qkv_raw, *kc, *vc;
  const float* bias;
  float clip;
  RowMap m;
  int H, hd, cap;
  __device__ void operator()(int g, int c, float v) const {
    const int64_t i = int64_t(g) * 3 * H * hd + c;
    qkv[i] = v;
    if (qkv_raw) qkv_raw[i] = v;
    split_one(qkv, kc, vc, bias, clip, m, H, hd, cap, g, c, v);
  }
};

// Score of key kt + lane for a query row at absolute position pos (-inf when masked).
__device__ __forceinline__ float score(const float* qrow, const float* Ks, int hd, int lane, int j,
                                       int pos, float scale, float slope, const AlibiParams& a) {
  if (j > pos) return -INFINITY;
  const float* k = Ks + lane * (hd + 1);
  float dot = 0;
  for (int e = 0; e < hd; ++e) dot += qrow[e] * k[e];
  return alibi_score<float>(dot, scale, slope, j, a);
}

// One row's output after a key tile: o = alpha * o + sum over the tile's nj keys of p_j * V[j],
// the probabilities one per lane (e, broadcast by shuffles), V's rows at v with stride hd (the
// staged tile or the cache), lane owning dimensions lane, lane + 32, ...
template <int DPL>
__device__ __forceinline__ void accumulate_pv(float (&o)[DPL], float alpha, float e, int nj,
                                              const float* v, int hd, int lane) {
#pragma unroll
  for (int x = 0; x < DPL; ++x) o[x] *= alpha;
  for (int jj = 0; jj < nj; ++jj) {
    const float p = __shfl_sync(0xffffffffu, e, jj);
#pragma unroll
    for (int x = 0; x < DPL; ++x) {
      const int dim = lane + 32 * x;
      if (dim < hd) o[x] += p * v[jj * hd + dim];
    }
  }
}

template <int DPL, int kRowsPerWarp, class W>
__global__ void __launch_bounds__(kWarps * 32)
    attention_kernel(W* ctx, float* row_stats, float* probs, const int64_t* probs_off, float* lse,
                     const float* qkv, const float* kc, const float* vc, const float* slopes,
                     AlibiParams alibi, RowMap m, int H, int hd, int cap) {
  constexpr int kRows = kWarps * kRowsPerWarp;  // query rows per block
  extern __shared__ float smem[];
  const int b = blockIdx.z, h = blockIdx.y, r0 = blockIdx.x * kRows;
  const int n = m.n_rows[b];
  if (r0 >= n) return;
  const int past = m.past[b], row0 = m.q_row0[b], d = H * hd;
  const int rows = min(kRows, n - r0);
  const int nkeys = past + r0 + rows;  // keys 0 .. position of the block's last row
  float* Qs = smem;                    // [kRows][hd]
  float* Ks = Qs + kRows * hd;         // [kTile][hd + 1]
  float* Vs = Ks + kTile * (hd + 1);   // [kTile][hd]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float scale = alibi_scale<float>(alibi, hd), slope = slopes[h];
  const int64_t kv_base = (int64_t(b) * H + h) * cap * hd;

  const int64_t q0 = qkv_row(h, 0, hd);
  for (int i = threadIdx.x; i < rows * hd; i += blockDim.x)
    Qs[i] = qkv[int64_t(row0 + r0 + i / hd) * 3 * d + q0 + i % hd];

  online::RowState st[kRowsPerWarp];
  float o[kRowsPerWarp][DPL];
#pragma unroll
  for (int k = 0; k < kRowsPerWarp; ++k)
#pragma unroll
    for (int x = 0; x < DPL; ++x) o[k][x] = 0;

  auto load_tile = [&](int kt, bool with_v) {
    __syncthreads();  // the previous tile is no longer read
    const int nt = min(kTile, nkeys - kt);
    for (int i = threadIdx.x; i < nt * hd; i += blockDim.x) {
      const int j = i / hd, e = i % hd;
      Ks[j * (hd + 1) + e] = kc[kv_base + int64_t(kt + j) * hd + e];
      if (with_v) Vs[j * hd + e] = vc[kv_base + int64_t(kt + j) * hd + e];
    }
    __syncthreads();
  };

  for (int kt = 0; kt < nkeys; kt += kTile) {
    load_tile(kt, true);
#pragma unroll
    for (int k = 0; k < kRowsPerWarp; ++k) {
      const int r = r0 + warp + kWarps * k;
      if (r >= n) continue;
      const int pos = past + r;
      if (kt > pos) continue;
      const int j = kt + lane;
      const float s = score(Qs + (r - r0) * hd, Ks, hd, lane, j, pos, scale, slope, alibi);
      const float alpha = online::rescale(st[k], fmaxf(st[k].m, warp_max(s)));
      const bool valid = j <= pos;
      const float e = valid ? expf(s - st[k].m) : 0.0f;
      const float e_bos = __shfl_sync(0xffffffffu, e, 0);
      online::add_tile(st[k], warp_sum(e), warp_sum(valid ? e * (s - st[k].m) : 0.0f),
                       kt == 0 ? e_bos : 0.0f, warp_sum(j >= pos - 2 ? e : 0.0f));
      accumulate_pv(o[k], alpha, e, min(kTile, pos - kt + 1), Vs, hd, lane);
    }
  }

#pragma unroll
  for (int k = 0; k < kRowsPerWarp; ++k) {
    const int r = r0 + warp + kWarps * k;
    if (r >= n) continue;
    const int64_t g = row0 + r;
    const float inv = 1.0f / st[k].l;
#pragma unroll
    for (int x = 0; x < DPL; ++x) {
      const int dim = lane + 32 * x;
      if (dim < hd) ctx[g * d + h * hd + dim] = from_f32<W>(o[k][x] * inv);
    }
    if (row_stats && lane == 0) {
      const online::RowStats rs = online::finish(st[k]);
      row_stats[(0 * int64_t(H) + h) * m.N + g] = rs.bos;
      row_stats[(1 * int64_t(H) + h) * m.N + g] = rs.entropy;
      row_stats[(2 * int64_t(H) + h) * m.N + g] = rs.local;
    }
    if (lse && lane == 0) lse[int64_t(h) * m.N + g] = st[k].m + logf(st[k].l);
  }
  if (!probs) return;
  // Second pass over the keys, now that each row's max and denominator are final.
  float* P = probs + probs_off[b];
  const int64_t width = past + n;
  for (int kt = 0; kt < nkeys; kt += kTile) {
    load_tile(kt, false);
#pragma unroll
    for (int k = 0; k < kRowsPerWarp; ++k) {
      const int r = r0 + warp + kWarps * k;
      if (r >= n) continue;
      const int pos = past + r, j = kt + lane;
      if (j > pos) continue;
      const float s = score(Qs + (r - r0) * hd, Ks, hd, lane, j, pos, scale, slope, alibi);
      P[(int64_t(h) * n + r) * width + j] = expf(s - st[k].m) / st[k].l;
    }
  }
}

template <int DPL, int kRowsPerWarp, class W>
void launch_attention(W* ctx, float* row_stats, float* probs, const int64_t* probs_off, float* lse,
                      const float* qkv, const float* kc, const float* vc, const float* slopes,
                      const AlibiParams& alibi, RowMap m, int H, int hd, int cap, int max_rows,
                      cudaStream_t stream) {
  constexpr int kRows = kWarps * kRowsPerWarp;
  const size_t smem =
      sizeof(float) * (size_t(kRows) * hd + size_t(kTile) * (hd + 1) + size_t(kTile) * hd);
  // Above 48 KB a kernel must opt in; done once per instantiation, outside any graph capture.
  static size_t allowed = 48 * 1024;
  if (smem > allowed) {
    HS_CUDA(cudaFuncSetAttribute(attention_kernel<DPL, kRowsPerWarp, W>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    allowed = smem;
  }
  const dim3 grid((max_rows + kRows - 1) / kRows, H, m.B);
  attention_kernel<DPL, kRowsPerWarp, W><<<grid, kWarps * 32, smem, stream>>>(
      ctx, row_stats, probs, probs_off, lse, qkv, kc, vc, slopes, alibi, m, H, hd, cap);
  HS_CUDA(cudaGetLastError());
}

// Decoding steps (one new row per sequence) with no statistics asked: the row's keys split over
// the block's 8 warps, warp w taking key tiles w, w + 8, ... with its own online-softmax state,
// the 8 states merged at the end (flash-decoding). attention_kernel gives such a row one warp,
// which walks every tile alone: predicted ~45 µs per layer at 2,048 keys (bloom-1b7), about the
// weights' own read time per token over 24 layers. Lane j scores key kt + j, reading its key row
// from the cache in 16-byte pieces (the query from shared memory); dot products sum in the same
// order as score()'s, so the scores are the other kernel's.
template <int DPL, class W>
__global__ void __launch_bounds__(kWarps * 32)
    attention_decode_kernel(W* ctx, const float* qkv, const float* kc, const float* vc,
                            const float* slopes, AlibiParams alibi, RowMap m, int H, int hd,
                            int cap) {
  extern __shared__ float smem[];  // the query [hd], then per warp: m, l, output [hd]
  const int b = blockIdx.y, h = blockIdx.x;
  if (m.n_rows[b] == 0) return;  // not in this step
  const int g = m.q_row0[b], pos = m.past[b], d = H * hd;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* q = smem;
  float* part = smem + ((hd + 3) & ~3);  // 16-byte aligned after the query
  for (int e = threadIdx.x; e < hd; e += blockDim.x)
    q[e] = qkv[int64_t(g) * 3 * d + qkv_row(h, 0, hd) + e];
  __syncthreads();
  const float scale = alibi_scale<float>(alibi, hd), slope = slopes[h];
  const int64_t kv_base = (int64_t(b) * H + h) * cap * hd;
  const bool vec4 = (hd & 3) == 0 && (reinterpret_cast<uintptr_t>(kc) & 15) == 0;
  online::RowState st;
  float o[DPL];
#pragma unroll
  for (int x = 0; x < DPL; ++x) o[x] = 0;
  for (int kt = warp * kTile; kt <= pos; kt += kWarps * kTile) {
    const int j = kt + lane;
    float s = -INFINITY;
    if (j <= pos) {
      const float* k = kc + kv_base + int64_t(j) * hd;
      float dot = 0;
      if (vec4) {
        for (int e = 0; e < hd; e += 4) {
          const float4 kv = *reinterpret_cast<const float4*>(k + e);
          dot += q[e] * kv.x;
          dot += q[e + 1] * kv.y;
          dot += q[e + 2] * kv.z;
          dot += q[e + 3] * kv.w;
        }
      } else {
        for (int e = 0; e < hd; ++e) dot += q[e] * k[e];
      }
      s = alibi_score<float>(dot, scale, slope, j, alibi);
    }
    const float alpha = online::rescale(st, fmaxf(st.m, warp_max(s)));
    const float e = j <= pos ? expf(s - st.m) : 0.0f;
    online::add_tile(st, warp_sum(e), 0.0f, 0.0f, 0.0f);
    accumulate_pv(o, alpha, e, min(kTile, pos - kt + 1), vc + kv_base + int64_t(kt) * hd, hd, lane);
  }
  float* mine = part + warp * (hd + 2);
  if (lane == 0) mine[0] = st.m, mine[1] = st.l;
#pragma unroll
  for (int x = 0; x < DPL; ++x)
    if (lane + 32 * x < hd) mine[2 + lane + 32 * x] = o[x];
  __syncthreads();
  // Merge: the states rescaled to the largest maximum (a warp without keys has m = -inf, l = 0).
  float M = -INFINITY, L = 0;
  for (int w = 0; w < kWarps; ++w) M = fmaxf(M, part[w * (hd + 2)]);
  for (int w = 0; w < kWarps; ++w) {
    const float mw = part[w * (hd + 2)];
    if (mw != -INFINITY) L += part[w * (hd + 2) + 1] * expf(mw - M);
  }
  for (int e = threadIdx.x; e < hd; e += blockDim.x) {
    float acc = 0;
    for (int w = 0; w < kWarps; ++w) {
      const float mw = part[w * (hd + 2)];
      if (mw != -INFINITY) acc += part[w * (hd + 2) + 2 + e] * expf(mw - M);
    }
    ctx[int64_t(g) * d + h * hd + e] = from_f32<W>(acc / L);
  }
}

template <int DPL, class W>
void launch_attention_decode(W* ctx, const float* qkv, const float* kc, const float* vc,
                             const float* slopes, const AlibiParams& alibi, RowMap m, int H, int hd,
                             int cap, cudaStream_t stream) {
  const size_t smem = sizeof(float) * (size_t((hd + 3) & ~3) + size_t(kWarps) * (hd + 2));
  const dim3 grid(H, m.B);
  attention_decode_kernel<DPL, W>
      <<<grid, kWarps * 32, smem, stream>>>(ctx, qkv, kc, vc, slopes, alibi, m, H, hd, cap);
  HS_CUDA(cudaGetLastError());
}

}  // namespace

void qkv_split(float* qkv, float* kc, float* vc, const float* bias, float clip, RowMap m, int H,
               int hd, int cap, cudaStream_t stream) {
  if (m.N == 0) return;
  qkv_split_kernel<<<m.N, 256, 0, stream>>>(qkv, kc, vc, bias, clip, m, H, hd, cap);
  HS_CUDA(cudaGetLastError());
}

template <class W>
void linear_qkv_forward(float* qkv, float* qkv_raw, float* kc, float* vc, cublasHandle_t blas,
                        const W* inp, const W* Wt, const float* bias, float clip, RowMap m, int IC,
                        int H, int hd, int cap, cudaStream_t stream) {
  const int C = 3 * H * hd;
  if (gemv_rows(stream, inp, Wt, m.N, IC, C, 1.0f,
                SplitRows{qkv, qkv_raw, kc, vc, bias, clip, m, H, hd, cap})) {
    HS_CUDA(cudaGetLastError());
    return;
  }
  gemm_rows<W>(blas, qkv, C, inp, Wt, m.N, IC, C);
  if (qkv_raw)
    HS_CUDA(cudaMemcpyAsync(qkv_raw, qkv, size_t(m.N) * C * sizeof(float), cudaMemcpyDeviceToDevice,
                            stream));
  qkv_split(qkv, kc, vc, bias, clip, m, H, hd, cap, stream);
}

template <class W>
void alibi_attention_forward(W* ctx, float* row_stats, float* probs, const int64_t* probs_off,
                             const float* qkv, const float* kc, const float* vc,
                             const float* slopes, const AlibiParams& alibi, RowMap m, int H, int hd,
                             int cap, int max_rows, cudaStream_t stream, float* lse) {
  if (max_rows <= 0 || m.B == 0) return;
  if constexpr (!std::is_same_v<W, float>)
    if (!probs && max_rows >= kTensorCoreMinRows && tensor_core_attention_fits(hd, {qkv, kc, vc}))
      return alibi_attention_forward_tc<W>(ctx, row_stats, qkv, kc, vc, slopes, alibi, m, H, hd,
                                           cap, max_rows, stream, lse);
  const int dpl = (hd + 31) / 32;
  if (max_rows == 1 && !row_stats && !probs && !lse) {
    if (dpl <= 1)
      return launch_attention_decode<1, W>(ctx, qkv, kc, vc, slopes, alibi, m, H, hd, cap, stream);
    if (dpl <= 2)
      return launch_attention_decode<2, W>(ctx, qkv, kc, vc, slopes, alibi, m, H, hd, cap, stream);
    if (dpl <= 4)
      return launch_attention_decode<4, W>(ctx, qkv, kc, vc, slopes, alibi, m, H, hd, cap, stream);
    if (dpl <= 8)
      return launch_attention_decode<8, W>(ctx, qkv, kc, vc, slopes, alibi, m, H, hd, cap, stream);
  }
  // Short inputs (a diagnosis prompt, a decoding step) get one row per warp: 4 times the blocks
  // (T = 60 with 16 heads: 128 blocks instead of 32 on 132 SMs) and a quarter of the serial work
  // per warp; longer ones keep 4 rows per warp, which share each staged key tile.
#define HS_LAUNCH(D)                                                                         \
  return max_rows <= kShortRows                                                              \
             ? launch_attention<D, 1, W>(ctx, row_stats, probs, probs_off, lse, qkv, kc, vc, \
                                         slopes, alibi, m, H, hd, cap, max_rows, stream)     \
             : launch_attention<D, 4, W>(ctx, row_stats, probs, probs_off, lse, qkv, kc, vc, \
                                         slopes, alibi, m, H, hd, cap, max_rows, stream)
  if (dpl <= 1) HS_LAUNCH(1);
  if (dpl <= 2) HS_LAUNCH(2);
  if (dpl <= 4) HS_LAUNCH(4);
  if (dpl <= 8) HS_LAUNCH(8);
#undef HS_LAUNCH
  throw Error("cuda", "head dimension " + std::to_string(hd) + " is above the supported 256");
}

#define HS_INSTANTIATE(W)                                                                         \
  template void alibi_attention_forward<W>(                                                       \
      W*, float*, float*, const int64_t*, const float*, const float*, const float*, const float*, \
      const AlibiParams&, RowMap, int, int, int, int, cudaStream_t, float*);                      \
  template void linear_qkv_forward<W>(float*, float*, float*, float*, cublasHandle_t, const W*,   \
                                      const W*, const float*, float, RowMap, int, int, int, int,  \
                                      cudaStream_t);
HS_INSTANTIATE(float)
HS_INSTANTIATE(__nv_bfloat16)
HS_INSTANTIATE(__half)
#undef HS_INSTANTIATE

}  // namespace hs::cuda
