// ALiBi attention backward of a training pass, FlashAttention-2's recurrence on CUDA cores: the
// probabilities are recomputed tile by tile from q·k, the family's ALiBi score (ops/alibi.h) and
// the row's log-sum-exp saved by the forward, so nothing T x T is ever in memory. With
// D_t = dctx_t · ctx_t (= sum_j p_tj dp_tj), dp_tj = dctx_t · v_j and ds_tj = p_tj (dp_tj - D_t):
//   dv_j = sum_t p_tj dctx_t,   dk_j = scale sum_t ds_tj q_t,   dq_t = scale sum_j ds_tj k_j
// (the ALiBi bias does not depend on q or k: d score / d (q·k) is the scale in every family).
// Three kernels, no atomics, deterministic: D per (row, head); dk/dv per key tile (each block
// owns its keys' gradient rows and streams the query tiles at or after them); dq per query tile
// (each block owns its rows and streams the key tiles up to them).
//
// Tiles: 256 threads as 16 x 16 (tx, ty). A thread scores rows ty + 16 a (a < RB) against keys
// tx + 16 b (b < KB) of the tile pair, from float4 reads of row-major Q/dctx/K/V tiles padded to
// HDP dims (zeros past hd) with rows of HDP + 4 floats: the 8 lanes of a quarter warp read 8
// consecutive key rows, 16 bytes each in distinct banks. For the accumulations a thread owns
// dims 4 i + 64 u + c (c < 4; i = ty for dk/dv, tx for dq) of its keys (rows), reading the tile's
// P and dS from shared memory.
#include <string>
#include <type_traits>

#include "cuda/runtime.h"
#include "ops/cuda/attention_tc.cuh"
#include "ops/cuda/common.cuh"
#include "ops/cuda/ops.cuh"
#include "ops/qkv_layout.h"
#include "util/error.h"

namespace hs::cuda {

namespace {

constexpr int kThreads = 256;

template <int HDP_, int RB_, int KB_>
struct Geometry {
  static constexpr int HDP = HDP_, RB = RB_, KB = KB_;
  static constexpr int BR = 16 * RB, BC = 16 * KB;  // query rows, keys per tile
  static constexpr int LD = HDP + 4;                // row stride of the Q, dctx, K, V tiles
  static constexpr int LDS = BC + 16;   // row stride of P and dS: rows ty, ty + 1 16 banks apart
  static constexpr int DPT = HDP / 16;  // dims per thread in the accumulations
  // Blocks per SM that shared memory allows (228 KB per SM): registers need not be capped below.
  static constexpr int kMinBlocks = HDP == 64 ? 2 : 1;
  static_assert(HDP % 64 == 0, "dims are owned in groups of 4 x 16 threads");
};

// rows x HDP floats into a tile with row stride LD: rows < valid and dims < hd from src (row
// stride ld), zeros elsewhere.
template <int HDP, int LD>
__device__ void load_tile(float* dst, const float* src, int64_t ld, int rows, int valid, int hd) {
  for (int i = threadIdx.x; i < rows * HDP; i += kThreads) {
    const int r = i / HDP, e = i % HDP;
    dst[r * LD + e] = r < valid && e < hd ? src[r * ld + e] : 0.0f;
  }
}

__device__ __forceinline__ float dot4(float acc, const float4& a, const float4& b) {
  acc = fmaf(a.x, b.x, acc);  // in e order, as the forward's dot products
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}

// s[a][b] = A_row(ty + 16 a) · B_row(tx + 16 b) over hd4 dims (hd rounded up to 4; zero padded).
template <class G>
__device__ void tile_dots(float (&s)[G::RB][G::KB], const float* A, const float* B, int hd4) {
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int a = 0; a < G::RB; ++a)
#pragma unroll
    for (int b = 0; b < G::KB; ++b) s[a][b] = 0;
  for (int e = 0; e < hd4; e += 4) {
    float4 x[G::RB], y[G::KB];
#pragma unroll
    for (int a = 0; a < G::RB; ++a)
      x[a] = *reinterpret_cast<const float4*>(A + (ty + 16 * a) * G::LD + e);
#pragma unroll
    for (int b = 0; b < G::KB; ++b)
      y[b] = *reinterpret_cast<const float4*>(B + (tx + 16 * b) * G::LD + e);
#pragma unroll
    for (int a = 0; a < G::RB; ++a)
#pragma unroll
      for (int b = 0; b < G::KB; ++b) s[a][b] = dot4(s[a][b], x[a], y[b]);
  }
}

// What both kernels need to know of one (head, sequence).
struct Seq {
  int n, row0;     // rows of the sequence, its first row in the pass
  int64_t q_off;   // qkv column of the head's queries
  int64_t kv_off;  // the head's cache rows: kc + kv_off + j * hd
  float scale, slope;
};

__device__ __forceinline__ Seq seq_of(const RowMap& m, int b, int h, int H, int hd, int cap,
                                      const float* slopes, const AlibiParams& a) {
  return {m.n_rows[b],
          m.q_row0[b],
          qkv_row(h, 0, hd),
          (int64_t(b) * H + h) * cap * hd,
          alibi_scale<float>(a, hd),
          slopes[h]};
}

// The tile pair's probabilities and dS into Ps (when not null) and Ss, [BR][LDS]: rows t0 + r of
// Qs/Os (log-sum-exp Ls, D Ds) against keys j0 + c of Ks/Vs, causal (key <= row < n).
template <class G>
__device__ void tile_probs(float* Ps, float* Ss, const float* Qs, const float* Os, const float* Ks,
                           const float* Vs, const float* Ls, const float* Ds, int t0, int j0, int n,
                           int hd4, const Seq& sq, const AlibiParams& a) {
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float s[G::RB][G::KB], dp[G::RB][G::KB];
  tile_dots<G>(s, Qs, Ks, hd4);
  tile_dots<G>(dp, Os, Vs, hd4);
#pragma unroll
  for (int i = 0; i < G::RB; ++i) {
    const int r = ty + 16 * i, t = t0 + r;
#pragma unroll
    for (int k = 0; k < G::KB; ++k) {
      const int c = tx + 16 * k, j = j0 + c;
      const float p = t < n && j <= t
                          ? expf(alibi_score<float>(s[i][k], sq.scale, sq.slope, j, a) - Ls[r])
                          : 0.0f;
      if (Ps) Ps[r * G::LDS + c] = p;
      Ss[r * G::LDS + c] = p * (dp[i][k] - Ds[r]);
    }
  }
}

// Rows t0 .. t0 + BR of the sequence's queries, dctx, lse and D into shared memory.
template <class G>
__device__ void load_rows(float* Qs, float* Os, float* Ls, float* Ds, const float* qkv,
                          const float* dctx, const float* lse, const float* D, const Seq& sq,
                          int t0, int h, int N, int d, int hd) {
  const int valid = min(G::BR, sq.n - t0);
  const int64_t g0 = sq.row0 + t0;
  load_tile<G::HDP, G::LD>(Qs, qkv + g0 * 3 * d + sq.q_off, 3 * int64_t(d), G::BR, valid, hd);
  load_tile<G::HDP, G::LD>(Os, dctx + g0 * d + int64_t(h) * hd, d, G::BR, valid, hd);
  for (int r = threadIdx.x; r < G::BR; r += kThreads) {
    Ls[r] = r < valid ? lse[int64_t(h) * N + g0 + r] : 0.0f;
    Ds[r] = r < valid ? D[int64_t(h) * N + g0 + r] : 0.0f;
  }
}

// D[h][g] = dctx[g, h] · ctx[g, h]: one warp per (row, head).
template <class W>
__global__ void attn_bwd_d_kernel(float* D, const float* dctx, const W* ctx,
                                  const uint8_t* head_mask, int N, int H, int hd) {
  const int lane = threadIdx.x & 31;
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (w >= int64_t(N) * H) return;
  const int g = int(w / H), h = int(w % H);
  if (head_mask && !head_mask[h]) return;
  const int64_t off = int64_t(g) * H * hd + int64_t(h) * hd;
  float s = 0;
  for (int e = lane; e < hd; e += 32) s += dctx[off + e] * to_f32(ctx[off + e]);
  s = warp_sum(s);
  if (lane == 0) D[int64_t(h) * N + g] = s;
}

template <class W>
void launch_d(float* D, const float* dctx, const W* ctx, const uint8_t* head_mask, int N, int H,
              int hd, cudaStream_t stream) {
  const int64_t warps = int64_t(N) * H;
  attn_bwd_d_kernel<W><<<int((warps * 32 + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      D, dctx, ctx, head_mask, N, H, hd);
  HS_CUDA(cudaGetLastError());
}

// dk, dv of the keys j0 .. j0 + BC of head blockIdx.y of sequence blockIdx.z.
template <class G>
__global__ void __launch_bounds__(kThreads, G::kMinBlocks)
    attn_bwd_dkdv_kernel(float* dqkv, const float* dctx, const float* qkv, const float* kc,
                         const float* vc, const float* lse, const float* D, const float* slopes,
                         AlibiParams alibi, RowMap m, int H, int hd, int cap,
                         const uint8_t* head_mask) {
  extern __shared__ float4 smem4[];
  const int b = blockIdx.z, h = blockIdx.y, j0 = blockIdx.x * G::BC;
  if (head_mask && !head_mask[h]) return;
  const Seq sq = seq_of(m, b, h, H, hd, cap, slopes, alibi);
  if (j0 >= sq.n) return;
  float* Ks = reinterpret_cast<float*>(smem4);  // [BC][LD]
  float* Vs = Ks + G::BC * G::LD;               // [BC][LD]
  float* Qs = Vs + G::BC * G::LD;               // [BR][LD]
  float* Os = Qs + G::BR * G::LD;               // [BR][LD]
  float* Ps = Os + G::BR * G::LD;               // [BR][LDS]
  float* Ss = Ps + G::BR * G::LDS;              // [BR][LDS]
  float* Ls = Ss + G::BR * G::LDS;              // [BR]
  float* Ds = Ls + G::BR;                       // [BR]
  const int d = H * hd, hd4 = (hd + 3) / 4 * 4, n = sq.n;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int keys = min(G::BC, n - j0);
  load_tile<G::HDP, G::LD>(Ks, kc + sq.kv_off + int64_t(j0) * hd, hd, G::BC, keys, hd);
  load_tile<G::HDP, G::LD>(Vs, vc + sq.kv_off + int64_t(j0) * hd, hd, G::BC, keys, hd);

  float dk[G::KB][G::DPT], dv[G::KB][G::DPT];
#pragma unroll
  for (int k = 0; k < G::KB; ++k)
#pragma unroll
    for (int x = 0; x < G::DPT; ++x) dk[k][x] = dv[k][x] = 0;

  // Query tiles holding rows >= j0: a row attends to keys at or before it.
  for (int t0 = j0 / G::BR * G::BR; t0 < n; t0 += G::BR) {
    __syncthreads();  // the previous tile's Q, dctx, P and dS are no longer read
    load_rows<G>(Qs, Os, Ls, Ds, qkv, dctx, lse, D, sq, t0, h, m.N, d, hd);
    __syncthreads();
    tile_probs<G>(Ps, Ss, Qs, Os, Ks, Vs, Ls, Ds, t0, j0, n, hd4, sq, alibi);
    __syncthreads();
    const int rows = min(G::BR, n - t0);
    for (int r = 0; r < rows; ++r) {
      float p[G::KB], ds[G::KB];
#pragma unroll
      for (int k = 0; k < G::KB; ++k) {
        p[k] = Ps[r * G::LDS + tx + 16 * k];
        ds[k] = Ss[r * G::LDS + tx + 16 * k];
      }
#pragma unroll
      for (int u = 0; u < G::HDP / 64; ++u) {
        const float4 o = *reinterpret_cast<const float4*>(Os + r * G::LD + 4 * ty + 64 * u);
        const float4 q = *reinterpret_cast<const float4*>(Qs + r * G::LD + 4 * ty + 64 * u);
#pragma unroll
        for (int k = 0; k < G::KB; ++k) {
          dv[k][4 * u + 0] += p[k] * o.x;
          dv[k][4 * u + 1] += p[k] * o.y;
          dv[k][4 * u + 2] += p[k] * o.z;
          dv[k][4 * u + 3] += p[k] * o.w;
          dk[k][4 * u + 0] += ds[k] * q.x;
          dk[k][4 * u + 1] += ds[k] * q.y;
          dk[k][4 * u + 2] += ds[k] * q.z;
          dk[k][4 * u + 3] += ds[k] * q.w;
        }
      }
    }
  }

  const int64_t k_off = qkv_row(h, 1, hd), v_off = qkv_row(h, 2, hd);
#pragma unroll
  for (int k = 0; k < G::KB; ++k) {
    const int j = j0 + tx + 16 * k;
    if (j >= n) continue;
    float* row = dqkv + (int64_t(sq.row0) + j) * 3 * d;
#pragma unroll
    for (int x = 0; x < G::DPT; ++x) {
      const int e = 4 * ty + 64 * (x / 4) + x % 4;
      if (e >= hd) continue;
      row[k_off + e] += sq.scale * dk[k][x];
      row[v_off + e] += dv[k][x];
    }
  }
}

// dq of the query rows t0 .. t0 + BR (heaviest tiles first) of head blockIdx.y of sequence
// blockIdx.z.
template <class G>
__global__ void __launch_bounds__(kThreads, G::kMinBlocks)
    attn_bwd_dq_kernel(float* dqkv, const float* dctx, const float* qkv, const float* kc,
                       const float* vc, const float* lse, const float* D, const float* slopes,
                       AlibiParams alibi, RowMap m, int H, int hd, int cap,
                       const uint8_t* head_mask) {
  extern __shared__ float4 smem4[];
  const int b = blockIdx.z, h = blockIdx.y, t0 = (gridDim.x - 1 - blockIdx.x) * G::BR;
  if (head_mask && !head_mask[h]) return;
  const Seq sq = seq_of(m, b, h, H, hd, cap, slopes, alibi);
  if (t0 >= sq.n) return;
  float* Qs = reinterpret_cast<float*>(smem4);  // [BR][LD]
  float* Os = Qs + G::BR * G::LD;               // [BR][LD]
  float* Ks = Os + G::BR * G::LD;               // [BC][LD]
  float* Vs = Ks + G::BC * G::LD;               // [BC][LD]
  float* Ss = Vs + G::BC * G::LD;               // [BR][LDS]
  float* Ls = Ss + G::BR * G::LDS;              // [BR]
  float* Ds = Ls + G::BR;                       // [BR]
  const int d = H * hd, hd4 = (hd + 3) / 4 * 4, n = sq.n;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  load_rows<G>(Qs, Os, Ls, Ds, qkv, dctx, lse, D, sq, t0, h, m.N, d, hd);

  float dq[G::RB][G::DPT];
#pragma unroll
  for (int i = 0; i < G::RB; ++i)
#pragma unroll
    for (int x = 0; x < G::DPT; ++x) dq[i][x] = 0;

  const int last = min(n, t0 + G::BR);  // keys after the tile's last row get no probability
  for (int j0 = 0; j0 < last; j0 += G::BC) {
    const int keys = min(G::BC, n - j0);
    __syncthreads();  // the previous tile's K, V and dS are no longer read
    load_tile<G::HDP, G::LD>(Ks, kc + sq.kv_off + int64_t(j0) * hd, hd, G::BC, keys, hd);
    load_tile<G::HDP, G::LD>(Vs, vc + sq.kv_off + int64_t(j0) * hd, hd, G::BC, keys, hd);
    __syncthreads();
    tile_probs<G>(nullptr, Ss, Qs, Os, Ks, Vs, Ls, Ds, t0, j0, n, hd4, sq, alibi);
    __syncthreads();
    for (int c = 0; c < keys; ++c) {
      float ds[G::RB];
#pragma unroll
      for (int i = 0; i < G::RB; ++i) ds[i] = Ss[(ty + 16 * i) * G::LDS + c];
#pragma unroll
      for (int u = 0; u < G::HDP / 64; ++u) {
        const float4 k = *reinterpret_cast<const float4*>(Ks + c * G::LD + 4 * tx + 64 * u);
#pragma unroll
        for (int i = 0; i < G::RB; ++i) {
          dq[i][4 * u + 0] += ds[i] * k.x;
          dq[i][4 * u + 1] += ds[i] * k.y;
          dq[i][4 * u + 2] += ds[i] * k.z;
          dq[i][4 * u + 3] += ds[i] * k.w;
        }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < G::RB; ++i) {
    const int t = t0 + ty + 16 * i;
    if (t >= n) continue;
    float* row = dqkv + (int64_t(sq.row0) + t) * 3 * d + sq.q_off;
#pragma unroll
    for (int x = 0; x < G::DPT; ++x) {
      const int e = 4 * tx + 64 * (x / 4) + x % 4;
      if (e < hd) row[e] += sq.scale * dq[i][x];
    }
  }
}

// Dynamic shared memory above 48 KB must be opted into, once per kernel (outside any capture).
template <class Kernel>
void allow_smem(Kernel* k, size_t bytes, size_t& allowed) {
  if (bytes <= allowed) return;
  HS_CUDA(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  allowed = bytes;
}

// Geometries per padded head dim: A (dk/dv, keys fixed) and B (dq, rows fixed). Shared memory
// stays under the 163 KB an A100 allows a block (122 KB and 114 KB at HDP 128); accumulators
// stay at 64 or fewer registers per thread.
template <class A, class B>
void launch_backward(float* dqkv, const float* dctx, const float* qkv, const float* kc,
                     const float* vc, const float* lse, const float* D, const float* slopes,
                     const AlibiParams& alibi, RowMap m, int H, int hd, int cap, int max_rows,
                     const uint8_t* head_mask, cudaStream_t stream) {
  const size_t smem_a =
      sizeof(float) * (2 * A::BC * A::LD + 2 * A::BR * A::LD + 2 * A::BR * A::LDS + 2 * A::BR);
  const size_t smem_b =
      sizeof(float) * (2 * B::BR * B::LD + 2 * B::BC * B::LD + B::BR * B::LDS + 2 * B::BR);
  static size_t allowed_a = 48 * 1024, allowed_b = 48 * 1024;
  allow_smem(attn_bwd_dkdv_kernel<A>, smem_a, allowed_a);
  allow_smem(attn_bwd_dq_kernel<B>, smem_b, allowed_b);
  attn_bwd_dkdv_kernel<A>
      <<<dim3((max_rows + A::BC - 1) / A::BC, H, m.B), kThreads, smem_a, stream>>>(
          dqkv, dctx, qkv, kc, vc, lse, D, slopes, alibi, m, H, hd, cap, head_mask);
  HS_CUDA(cudaGetLastError());
  attn_bwd_dq_kernel<B><<<dim3((max_rows + B::BR - 1) / B::BR, H, m.B), kThreads, smem_b, stream>>>(
      dqkv, dctx, qkv, kc, vc, lse, D, slopes, alibi, m, H, hd, cap, head_mask);
  HS_CUDA(cudaGetLastError());
}

}  // namespace

template <class T>
void alibi_attention_backward_tc(float* dqkv, const float* dctx, const float* qkv, const float* kc,
                                 const float* vc, const T* ctx, const float* lse, float* D,
                                 const float* slopes, const AlibiParams& alibi, RowMap m, int H,
                                 int hd, int cap, int max_rows, const uint8_t* head_mask,
                                 cudaStream_t stream) {
  if (max_rows <= 0 || m.B == 0 || m.N == 0) return;
  launch_d<T>(D, dctx, ctx, head_mask, m.N, H, hd, stream);
  attention_backward_tc_kernels<T>(dqkv, dctx, qkv, kc, vc, lse, D, slopes, alibi, m, H, hd, cap,
                                   max_rows, head_mask, stream);
}
template void alibi_attention_backward_tc<__nv_bfloat16>(float*, const float*, const float*,
                                                         const float*, const float*,
                                                         const __nv_bfloat16*, const float*, float*,
                                                         const float*, const AlibiParams&, RowMap,
                                                         int, int, int, int, const uint8_t*,
                                                         cudaStream_t);
template void alibi_attention_backward_tc<__half>(float*, const float*, const float*, const float*,
                                                  const float*, const __half*, const float*, float*,
                                                  const float*, const AlibiParams&, RowMap, int,
                                                  int, int, int, const uint8_t*, cudaStream_t);

template <class W>
void alibi_attention_backward(float* dqkv, const float* dctx, const float* qkv, const float* kc,
                              const float* vc, const W* ctx, const float* lse, float* D,
                              const float* slopes, const AlibiParams& alibi, RowMap m, int H,
                              int hd, int cap, int max_rows, const uint8_t* head_mask,
                              cudaStream_t stream) {
  if (max_rows <= 0 || m.B == 0 || m.N == 0) return;
  if (hd > 256)
    throw Error("cuda", "head dimension " + std::to_string(hd) + " is above the supported 256");
  if constexpr (!std::is_same_v<W, float>)
    if (max_rows >= kTensorCoreMinRows && tensor_core_attention_fits(hd, {dqkv, dctx, qkv, kc, vc}))
      return alibi_attention_backward_tc<W>(dqkv, dctx, qkv, kc, vc, ctx, lse, D, slopes, alibi, m,
                                            H, hd, cap, max_rows, head_mask, stream);
  launch_d<W>(D, dctx, ctx, head_mask, m.N, H, hd, stream);
  using G64 = Geometry<64, 4, 4>;
  using A128 = Geometry<128, 2, 4>;
  using B128 = Geometry<128, 4, 2>;
  using G256 = Geometry<256, 2, 2>;
  auto launch = [&](auto a, auto b) {
    launch_backward<decltype(a), decltype(b)>(dqkv, dctx, qkv, kc, vc, lse, D, slopes, alibi, m, H,
                                              hd, cap, max_rows, head_mask, stream);
  };
  if (hd <= 64)
    launch(G64{}, G64{});
  else if (hd <= 128)
    launch(A128{}, B128{});
  else
    launch(G256{}, G256{});
}

#define HS_INSTANTIATE(W)                                                                       \
  template void alibi_attention_backward<W>(float*, const float*, const float*, const float*,   \
                                            const float*, const W*, const float*, float*,       \
                                            const float*, const AlibiParams&, RowMap, int, int, \
                                            int, int, const uint8_t*, cudaStream_t);
HS_INSTANTIATE(float)
HS_INSTANTIATE(__nv_bfloat16)
HS_INSTANTIATE(__half)
#undef HS_INSTANTIATE

}  // namespace hs::cuda
