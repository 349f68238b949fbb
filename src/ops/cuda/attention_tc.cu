// ALiBi attention on tensor cores, forward and backward, FlashAttention-2's tiling: 16-bit
// operands (the model's bf16 or fp16), fp32 accumulation, mma.sync m16n8k16 (mma.cuh). Nothing
// T x T is ever in memory: a warp holds a 16-row stripe of one score tile in registers.
//
// The engine keeps queries (in qkv) and the key/value caches in fp32; each tile is converted to
// 16 bits as it is staged into shared memory (fp32 reads, from L2 at long lengths: a staged tile
// serves 128 query rows in the forward, 32 or 64 in the backward).
//
// Forward, one block of 8 warps per (128 query rows, head, sequence), heaviest blocks first (a
// staged key tile serves 128 rows: half the L2 reads of 64-row blocks, as FlashAttention-2 tiles
// head dimension 128; at 248 registers per thread an SM holds one such block): each warp keeps
// its 16 rows' query fragments in registers, and per key tile of 64 computes S = Q K^T,
// the family's ALiBi score and the causal mask per element (ops/alibi.h), the online softmax of
// ops/online_softmax.h with the head statistics (first-token mass, entropy, local mass) reduced
// over the 4 lanes that share a row, and O += P V with P converted to 16 bits in registers.
//
// Backward (D = rowsum(dctx * ctx) computed before, by attention_backward.cu): probabilities
// recomputed from the forward's log-sum-exp, dS = P (dP - D). One kernel per 64 keys (a warp owns
// 16 keys: S^T = K Q^T and dP^T = V dO^T, then dV += P^T dO and dK += dS^T Q over query tiles of
// 32), one per 64 query rows (dQ += dS K over key tiles of 32); no atomics: deterministic. The
// transposed operands (Q, dO, K as the right factor) are staged transposed as well.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "cuda/runtime.h"
#include "ops/cuda/attention_tc.cuh"
#include "ops/cuda/common.cuh"
#include "ops/cuda/mma.cuh"
#include "ops/online_softmax.h"
#include "ops/qkv_layout.h"
#include "util/error.h"

namespace hs::cuda {

namespace {

constexpr int kFwdThreads = 256;  // forward: 8 warps of 16 query rows
constexpr int kFwdRows = 128;     // query rows per forward block
constexpr int kThreads = 128;     // backward: 4 warps of 16 rows (or keys) each
constexpr int kRows = 64;         // query rows per dq block, keys per dk-dv block
constexpr int kFwdKeys = 64;      // keys per forward tile
constexpr int kBwdTile = 32;      // query rows per dk-dv tile, keys per dq tile
// Row strides of the staged tiles, in 16-bit elements: 8 more than the width puts the rows that
// a fragment load reads (8 rows, 4 consecutive words each) in 32 distinct banks.
__host__ __device__ constexpr int ld_of(int width) { return width + 8; }

// rows x HD of a row-major fp32 matrix (row stride src_ld) into dst [rows][ld] as T; rows at or
// after `valid` are zeros (keys or queries past the sequence: finite and masked).
template <class T, int HD>
__device__ void stage_rows(T* dst, int ld, const float* src, int64_t src_ld, int rows, int valid) {
  for (int i = threadIdx.x; i < rows * (HD / 4); i += blockDim.x) {
    const int r = i / (HD / 4), e = 4 * (i % (HD / 4));
    const float4 v = r < valid ? *reinterpret_cast<const float4*>(src + r * src_ld + e)
                               : make_float4(0, 0, 0, 0);
    *reinterpret_cast<uint2*>(dst + r * ld + e) =
        make_uint2(mma::pack<T>(v.x, v.y), mma::pack<T>(v.z, v.w));
  }
}

// The same rows transposed: dst [HD][ld], dst[e][r] = src[r][e].
template <class T, int HD>
__device__ void stage_cols(T* dst, int ld, const float* src, int64_t src_ld, int rows, int valid) {
  for (int i = threadIdx.x; i < rows * (HD / 4); i += blockDim.x) {
    const int r = i % rows, e = 4 * (i / rows);  // consecutive threads: consecutive rows
    const float4 v = r < valid ? *reinterpret_cast<const float4*>(src + r * src_ld + e)
                               : make_float4(0, 0, 0, 0);
    dst[(e + 0) * ld + r] = from_f32<T>(v.x);
    dst[(e + 1) * ld + r] = from_f32<T>(v.y);
    dst[(e + 2) * ld + r] = from_f32<T>(v.z);
    dst[(e + 3) * ld + r] = from_f32<T>(v.w);
  }
}

// Sum over the 4 lanes that hold one row of a D fragment.
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

template <int HD, class T>
__global__ void __launch_bounds__(kFwdThreads)
    attn_tc_forward_kernel(T* ctx, float* row_stats, float* lse, const float* qkv, const float* kc,
                           const float* vc, const float* slopes, AlibiParams alibi, RowMap m, int H,
                           int cap) {
  constexpr int LD = ld_of(HD), LDT = ld_of(kFwdKeys);
  extern __shared__ uint4 smem_fwd[];
  T* Qs = reinterpret_cast<T*>(smem_fwd);  // [kFwdRows][LD]
  T* Ks = Qs + kFwdRows * LD;              // [kFwdKeys][LD]
  T* Vt = Ks + kFwdKeys * LD;              // [HD][LDT]: V transposed
  const int b = blockIdx.z, h = blockIdx.y, r0 = (gridDim.x - 1 - blockIdx.x) * kFwdRows;
  const int n = m.n_rows[b];
  if (r0 >= n) return;
  const int past = m.past[b], row0 = m.q_row0[b], d = H * HD;
  const int rows = min(kFwdRows, n - r0), nkeys = past + r0 + rows;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const float scale = alibi_scale<float>(alibi, HD), slope = slopes[h];
  const int64_t kv_base = (int64_t(b) * H + h) * cap * HD;

  stage_rows<T, HD>(Qs, LD, qkv + int64_t(row0 + r0) * 3 * d + qkv_row(h, 0, HD), 3 * int64_t(d),
                    kFwdRows, rows);
  __syncthreads();
  uint32_t qa[HD / 16][4];
#pragma unroll
  for (int kb = 0; kb < HD / 16; ++kb) mma::load_a<T>(qa[kb], Qs, LD, 16 * warp, 16 * kb);
  // This thread's two rows (g and g + 8 of the warp's 16) at their absolute positions; rows past
  // the sequence are computed (from zero queries) and not written.
  const int pos[2] = {past + r0 + 16 * warp + g, past + r0 + 16 * warp + g + 8};
  const int warp_last = past + r0 + 16 * warp + 15;
  online::RowState st[2];
  float o[HD / 8][4];
#pragma unroll
  for (int x = 0; x < HD / 8; ++x) o[x][0] = o[x][1] = o[x][2] = o[x][3] = 0;

  for (int kt = 0; kt < nkeys; kt += kFwdKeys) {
    __syncthreads();  // the previous tile is no longer read
    const int valid = min(kFwdKeys, nkeys - kt);
    stage_rows<T, HD>(Ks, LD, kc + kv_base + int64_t(kt) * HD, HD, kFwdKeys, valid);
    stage_cols<T, HD>(Vt, LDT, vc + kv_base + int64_t(kt) * HD, HD, kFwdKeys, valid);
    __syncthreads();
    if (kt > warp_last) continue;  // every row of this warp precedes the tile

    float s[kFwdKeys / 8][4];
#pragma unroll
    for (int nb = 0; nb < kFwdKeys / 8; ++nb) {
      s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0;
#pragma unroll
      for (int kb = 0; kb < HD / 16; ++kb) {
        uint32_t bk[2];
        mma::load_bt<T>(bk, Ks, LD, 8 * nb, 16 * kb);
        mma::mma_16816<T>(s[nb], qa[kb], bk);
      }
    }
    // Element c of block nb: row pos[c / 2], key kt + 8 nb + 2 t + c % 2.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < kFwdKeys / 8; ++nb)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int j = kt + 8 * nb + 2 * t + (c & 1), i = c >> 1;
        s[nb][c] = j <= pos[i] ? alibi_score<float>(s[nb][c], scale, slope, j, alibi) : -INFINITY;
        mx[i] = fmaxf(mx[i], s[nb][c]);
      }
    float alpha[2], sum_e[2] = {0, 0}, sum_es[2] = {0, 0}, e_bos[2] = {0, 0}, e_loc[2] = {0, 0};
#pragma unroll
    for (int i = 0; i < 2; ++i) alpha[i] = online::rescale(st[i], fmaxf(st[i].m, quad_max(mx[i])));
#pragma unroll
    for (int nb = 0; nb < kFwdKeys / 8; ++nb)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int j = kt + 8 * nb + 2 * t + (c & 1), i = c >> 1;
        const bool ok = j <= pos[i];
        const float e = ok ? expf(s[nb][c] - st[i].m) : 0.0f;
        sum_e[i] += e;
        sum_es[i] += ok ? e * (s[nb][c] - st[i].m) : 0.0f;
        e_bos[i] += j == 0 ? e : 0.0f;
        e_loc[i] += j >= pos[i] - 2 ? e : 0.0f;
        s[nb][c] = e;
      }
#pragma unroll
    for (int i = 0; i < 2; ++i)
      online::add_tile(st[i], quad_sum(sum_e[i]), quad_sum(sum_es[i]), quad_sum(e_bos[i]),
                       quad_sum(e_loc[i]));
#pragma unroll
    for (int x = 0; x < HD / 8; ++x) {
      o[x][0] *= alpha[0];
      o[x][1] *= alpha[0];
      o[x][2] *= alpha[1];
      o[x][3] *= alpha[1];
    }
    mma::mma_regs_bt<T, kFwdKeys / 16, HD / 8>(o, s, Vt, LDT);
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = r0 + 16 * warp + g + 8 * i;
    if (r >= n) continue;
    const int64_t row = row0 + r;
    const float inv = 1.0f / st[i].l;
    T* out = ctx + row * d + int64_t(h) * HD + 2 * t;
#pragma unroll
    for (int x = 0; x < HD / 8; ++x)
      *reinterpret_cast<uint32_t*>(out + 8 * x) =
          mma::pack<T>(o[x][2 * i] * inv, o[x][2 * i + 1] * inv);
    if (t != 0) continue;
    if (row_stats) {
      const online::RowStats rs = online::finish(st[i]);
      row_stats[(0 * int64_t(H) + h) * m.N + row] = rs.bos;
      row_stats[(1 * int64_t(H) + h) * m.N + row] = rs.entropy;
      row_stats[(2 * int64_t(H) + h) * m.N + row] = rs.local;
    }
    if (lse) lse[int64_t(h) * m.N + row] = st[i].m + logf(st[i].l);
  }
}

// The backward's two score-shaped products over one tile, rows r0 .. r0 + 16 of a1/a2 against
// the kBwdTile rows of m1/m2 (all row-major, row stride ld, HD wide): s = A1 M1^T, dp = A2 M2^T
// (dk/dv: K Q^T and V dO^T; dq: Q K^T and dO V^T), sharing the loop over the head dimension.
template <class T, int HD>
__device__ __forceinline__ void two_products(float (&s)[kBwdTile / 8][4],
                                             float (&dp)[kBwdTile / 8][4], const T* a1, const T* a2,
                                             int r0, const T* m1, const T* m2, int ld) {
#pragma unroll
  for (int nb = 0; nb < kBwdTile / 8; ++nb)
#pragma unroll
    for (int c = 0; c < 4; ++c) s[nb][c] = dp[nb][c] = 0;
#pragma unroll
  for (int kb = 0; kb < HD / 16; ++kb) {
    uint32_t x1[4], x2[4];
    mma::load_a<T>(x1, a1, ld, r0, 16 * kb);
    mma::load_a<T>(x2, a2, ld, r0, 16 * kb);
#pragma unroll
    for (int nb = 0; nb < kBwdTile / 8; ++nb) {
      uint32_t b1[2], b2[2];
      mma::load_bt<T>(b1, m1, ld, 8 * nb, 16 * kb);
      mma::load_bt<T>(b2, m2, ld, 8 * nb, 16 * kb);
      mma::mma_16816<T>(s[nb], x1, b1);
      mma::mma_16816<T>(dp[nb], x2, b2);
    }
  }
}

// Per-row values of a backward tile: the probability of key j for query q and dS from dP.
struct BwdRow {
  float scale, slope;
  AlibiParams alibi;
  __device__ __forceinline__ float prob(float dot, int q, int j, int n, float lse_q) const {
    return q < n && j <= q ? expf(alibi_score<float>(dot, scale, slope, j, alibi) - lse_q) : 0.0f;
  }
};

// dk, dv of keys j0 .. j0 + 64 of head blockIdx.y of sequence blockIdx.z.
template <int HD, class T>
__global__ void __launch_bounds__(kThreads)
    attn_tc_dkdv_kernel(float* dqkv, const float* dctx, const float* qkv, const float* kc,
                        const float* vc, const float* lse, const float* D, const float* slopes,
                        AlibiParams alibi, RowMap m, int H, int cap, const uint8_t* head_mask) {
  constexpr int LD = ld_of(HD), LDT = ld_of(kBwdTile);
  extern __shared__ uint4 smem_dkdv[];
  T* Ks = reinterpret_cast<T*>(smem_dkdv);              // [kRows][LD]
  T* Vs = Ks + kRows * LD;                              // [kRows][LD]
  T* Qs = Vs + kRows * LD;                              // [kBwdTile][LD]
  T* Os = Qs + kBwdTile * LD;                           // [kBwdTile][LD]: dctx
  T* Qt = Os + kBwdTile * LD;                           // [HD][LDT]
  T* Ot = Qt + HD * LDT;                                // [HD][LDT]
  float* Ls = reinterpret_cast<float*>(Ot + HD * LDT);  // [kBwdTile]
  float* Ds = Ls + kBwdTile;                            // [kBwdTile]
  const int b = blockIdx.z, h = blockIdx.y, j0 = blockIdx.x * kRows;
  if (head_mask && !head_mask[h]) return;
  const int n = m.n_rows[b];
  if (j0 >= n) return;
  const int row0 = m.q_row0[b], d = H * HD;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const BwdRow br{alibi_scale<float>(alibi, HD), slopes[h], alibi};
  const int64_t kv_base = (int64_t(b) * H + h) * cap * HD;
  const int keys = min(kRows, n - j0);
  stage_rows<T, HD>(Ks, LD, kc + kv_base + int64_t(j0) * HD, HD, kRows, keys);
  stage_rows<T, HD>(Vs, LD, vc + kv_base + int64_t(j0) * HD, HD, kRows, keys);
  const int jw = j0 + 16 * warp;  // this warp's first key; its keys are jw + g and jw + g + 8

  float dk[HD / 8][4], dv[HD / 8][4];
#pragma unroll
  for (int x = 0; x < HD / 8; ++x)
#pragma unroll
    for (int c = 0; c < 4; ++c) dk[x][c] = dv[x][c] = 0;

  for (int t0 = j0 / kBwdTile * kBwdTile; t0 < n; t0 += kBwdTile) {
    __syncthreads();  // the previous tile is no longer read
    const int valid = min(kBwdTile, n - t0);
    const float* q_src = qkv + int64_t(row0 + t0) * 3 * d + qkv_row(h, 0, HD);
    const float* o_src = dctx + int64_t(row0 + t0) * d + int64_t(h) * HD;
    stage_rows<T, HD>(Qs, LD, q_src, 3 * int64_t(d), kBwdTile, valid);
    stage_rows<T, HD>(Os, LD, o_src, d, kBwdTile, valid);
    stage_cols<T, HD>(Qt, LDT, q_src, 3 * int64_t(d), kBwdTile, valid);
    stage_cols<T, HD>(Ot, LDT, o_src, d, kBwdTile, valid);
    for (int r = threadIdx.x; r < kBwdTile; r += kThreads) {
      Ls[r] = r < valid ? lse[int64_t(h) * m.N + row0 + t0 + r] : 0.0f;
      Ds[r] = r < valid ? D[int64_t(h) * m.N + row0 + t0 + r] : 0.0f;
    }
    __syncthreads();
    if (t0 + kBwdTile - 1 < jw) continue;  // every query of the tile precedes this warp's keys

    // S^T = K Q^T and dP^T = V dO^T: rows are this warp's keys, columns the tile's queries.
    float s[kBwdTile / 8][4], dp[kBwdTile / 8][4];
    two_products<T, HD>(s, dp, Ks, Vs, 16 * warp, Qs, Os, LD);
    // Element c of block nb: key jw + g + 8 (c / 2), query t0 + 8 nb + 2 t + c % 2.
#pragma unroll
    for (int nb = 0; nb < kBwdTile / 8; ++nb)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int r = 8 * nb + 2 * t + (c & 1), j = jw + g + 8 * (c >> 1);
        const float p = br.prob(s[nb][c], t0 + r, j, n, Ls[r]);
        s[nb][c] = p;
        dp[nb][c] = p * (dp[nb][c] - Ds[r]);
      }
    // dV += P^T dO and dK += dS^T Q: the left factors from registers, the right ones transposed.
    mma::mma_regs_bt<T, kBwdTile / 16, HD / 8>(dv, s, Ot, LDT);
    mma::mma_regs_bt<T, kBwdTile / 16, HD / 8>(dk, dp, Qt, LDT);
  }

  const int64_t k_off = qkv_row(h, 1, HD), v_off = qkv_row(h, 2, HD);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int j = jw + g + 8 * i;
    if (j >= n) continue;
    float* row = dqkv + (int64_t(row0) + j) * 3 * d;
#pragma unroll
    for (int x = 0; x < HD / 8; ++x) {
      const int e = 8 * x + 2 * t;
      row[k_off + e] += br.scale * dk[x][2 * i];
      row[k_off + e + 1] += br.scale * dk[x][2 * i + 1];
      row[v_off + e] += dv[x][2 * i];
      row[v_off + e + 1] += dv[x][2 * i + 1];
    }
  }
}

// dq of query rows t0 .. t0 + 64 (heaviest blocks first) of head blockIdx.y of sequence
// blockIdx.z.
template <int HD, class T>
__global__ void __launch_bounds__(kThreads)
    attn_tc_dq_kernel(float* dqkv, const float* dctx, const float* qkv, const float* kc,
                      const float* vc, const float* lse, const float* D, const float* slopes,
                      AlibiParams alibi, RowMap m, int H, int cap, const uint8_t* head_mask) {
  constexpr int LD = ld_of(HD), LDT = ld_of(kBwdTile);
  extern __shared__ uint4 smem_dq[];
  T* Qs = reinterpret_cast<T*>(smem_dq);                // [kRows][LD]
  T* Os = Qs + kRows * LD;                              // [kRows][LD]: dctx
  T* Ks = Os + kRows * LD;                              // [kBwdTile][LD]
  T* Vs = Ks + kBwdTile * LD;                           // [kBwdTile][LD]
  T* Kt = Vs + kBwdTile * LD;                           // [HD][LDT]
  float* Ls = reinterpret_cast<float*>(Kt + HD * LDT);  // [kRows]
  float* Ds = Ls + kRows;                               // [kRows]
  const int b = blockIdx.z, h = blockIdx.y, t0 = (gridDim.x - 1 - blockIdx.x) * kRows;
  if (head_mask && !head_mask[h]) return;
  const int n = m.n_rows[b];
  if (t0 >= n) return;
  const int row0 = m.q_row0[b], d = H * HD;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const BwdRow br{alibi_scale<float>(alibi, HD), slopes[h], alibi};
  const int64_t kv_base = (int64_t(b) * H + h) * cap * HD;
  const int valid = min(kRows, n - t0);
  stage_rows<T, HD>(Qs, LD, qkv + int64_t(row0 + t0) * 3 * d + qkv_row(h, 0, HD), 3 * int64_t(d),
                    kRows, valid);
  stage_rows<T, HD>(Os, LD, dctx + int64_t(row0 + t0) * d + int64_t(h) * HD, d, kRows, valid);
  for (int r = threadIdx.x; r < kRows; r += kThreads) {
    Ls[r] = r < valid ? lse[int64_t(h) * m.N + row0 + t0 + r] : 0.0f;
    Ds[r] = r < valid ? D[int64_t(h) * m.N + row0 + t0 + r] : 0.0f;
  }
  const int rw = 16 * warp;  // this warp's first row in the block; its rows are rw + g, + 8

  float dq[HD / 8][4];
#pragma unroll
  for (int x = 0; x < HD / 8; ++x) dq[x][0] = dq[x][1] = dq[x][2] = dq[x][3] = 0;

  const int last = t0 + valid;  // keys at or after the block's last row + 1 get no probability
  for (int j0 = 0; j0 < last; j0 += kBwdTile) {
    __syncthreads();  // the previous tile is no longer read (and the rows above are staged)
    const int keys = min(kBwdTile, n - j0);
    stage_rows<T, HD>(Ks, LD, kc + kv_base + int64_t(j0) * HD, HD, kBwdTile, keys);
    stage_rows<T, HD>(Vs, LD, vc + kv_base + int64_t(j0) * HD, HD, kBwdTile, keys);
    stage_cols<T, HD>(Kt, LDT, kc + kv_base + int64_t(j0) * HD, HD, kBwdTile, keys);
    __syncthreads();
    if (j0 > t0 + rw + 15) continue;  // the tile's keys all follow this warp's rows

    float s[kBwdTile / 8][4], dp[kBwdTile / 8][4];
    two_products<T, HD>(s, dp, Qs, Os, rw, Ks, Vs, LD);
    // Element c of block nb: row rw + g + 8 (c / 2) of the block, key j0 + 8 nb + 2 t + c % 2.
#pragma unroll
    for (int nb = 0; nb < kBwdTile / 8; ++nb)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int r = rw + g + 8 * (c >> 1), j = j0 + 8 * nb + 2 * t + (c & 1);
        const float p = br.prob(s[nb][c], t0 + r, j, n, Ls[r]);
        s[nb][c] = p * (dp[nb][c] - Ds[r]);
      }
    mma::mma_regs_bt<T, kBwdTile / 16, HD / 8>(dq, s, Kt, LDT);  // dQ += dS K
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = t0 + rw + g + 8 * i;
    if (r >= n) continue;
    float* row = dqkv + (int64_t(row0) + r) * 3 * d + qkv_row(h, 0, HD);
#pragma unroll
    for (int x = 0; x < HD / 8; ++x) {
      const int e = 8 * x + 2 * t;
      row[e] += br.scale * dq[x][2 * i];
      row[e + 1] += br.scale * dq[x][2 * i + 1];
    }
  }
}

// Dynamic shared memory above 48 KB must be opted into, once per kernel (outside any capture).
template <class Kernel>
void allow_smem(Kernel* k, size_t bytes) {
  if (bytes <= 48 * 1024) return;
  HS_CUDA(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <int HD>
constexpr size_t fwd_smem(size_t elem) {
  return elem * (size_t(kFwdRows + kFwdKeys) * ld_of(HD) + size_t(HD) * ld_of(kFwdKeys));
}
template <int HD>
constexpr size_t dkdv_smem(size_t elem) {
  return elem * (size_t(2 * kRows + 2 * kBwdTile) * ld_of(HD) + 2 * size_t(HD) * ld_of(kBwdTile)) +
         sizeof(float) * 2 * kBwdTile;
}
template <int HD>
constexpr size_t dq_smem(size_t elem) {
  return elem * (size_t(2 * kRows + 2 * kBwdTile) * ld_of(HD) + size_t(HD) * ld_of(kBwdTile)) +
         sizeof(float) * 2 * kRows;
}

template <int HD, class T>
void launch_forward(T* ctx, float* row_stats, float* lse, const float* qkv, const float* kc,
                    const float* vc, const float* slopes, const AlibiParams& alibi, RowMap m, int H,
                    int cap, int max_rows, cudaStream_t stream) {
  constexpr size_t smem = fwd_smem<HD>(sizeof(T));
  static const bool opted = (allow_smem(attn_tc_forward_kernel<HD, T>, smem), true);
  (void)opted;
  const dim3 grid((max_rows + kFwdRows - 1) / kFwdRows, H, m.B);
  attn_tc_forward_kernel<HD, T><<<grid, kFwdThreads, smem, stream>>>(ctx, row_stats, lse, qkv, kc,
                                                                     vc, slopes, alibi, m, H, cap);
  HS_CUDA(cudaGetLastError());
}

template <int HD, class T>
void launch_backward(float* dqkv, const float* dctx, const float* qkv, const float* kc,
                     const float* vc, const float* lse, const float* D, const float* slopes,
                     const AlibiParams& alibi, RowMap m, int H, int cap, int max_rows,
                     const uint8_t* head_mask, cudaStream_t stream) {
  constexpr size_t smem_a = dkdv_smem<HD>(sizeof(T)), smem_b = dq_smem<HD>(sizeof(T));
  static const bool opted = (allow_smem(attn_tc_dkdv_kernel<HD, T>, smem_a),
                             allow_smem(attn_tc_dq_kernel<HD, T>, smem_b), true);
  (void)opted;
  const dim3 grid((max_rows + kRows - 1) / kRows, H, m.B);
  attn_tc_dkdv_kernel<HD, T><<<grid, kThreads, smem_a, stream>>>(
      dqkv, dctx, qkv, kc, vc, lse, D, slopes, alibi, m, H, cap, head_mask);
  HS_CUDA(cudaGetLastError());
  attn_tc_dq_kernel<HD, T><<<grid, kThreads, smem_b, stream>>>(dqkv, dctx, qkv, kc, vc, lse, D,
                                                               slopes, alibi, m, H, cap, head_mask);
  HS_CUDA(cudaGetLastError());
}

[[noreturn]] void unsupported(int hd) {
  throw Error("cuda", "the tensor-core attention takes head dimensions 64 and 128, not " +
                          std::to_string(hd));
}

}  // namespace

bool tensor_core_attention_fits(int hd, std::initializer_list<const void*> ptrs) {
  // Read at every call (a host getenv, no device work), so a test can compare both paths.
  const char* env = std::getenv("HEADSURGEON_TENSOR_CORES");
  if (env && std::string(env) == "0") return false;
  if (hd != 64 && hd != 128) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

template <class T>
void alibi_attention_forward_tc(T* ctx, float* row_stats, const float* qkv, const float* kc,
                                const float* vc, const float* slopes, const AlibiParams& alibi,
                                RowMap m, int H, int hd, int cap, int max_rows, cudaStream_t stream,
                                float* lse) {
  if (max_rows <= 0 || m.B == 0) return;
  if (hd == 64)
    return launch_forward<64, T>(ctx, row_stats, lse, qkv, kc, vc, slopes, alibi, m, H, cap,
                                 max_rows, stream);
  if (hd == 128)
    return launch_forward<128, T>(ctx, row_stats, lse, qkv, kc, vc, slopes, alibi, m, H, cap,
                                  max_rows, stream);
  unsupported(hd);
}

template <class T>
void attention_backward_tc_kernels(float* dqkv, const float* dctx, const float* qkv,
                                   const float* kc, const float* vc, const float* lse,
                                   const float* D, const float* slopes, const AlibiParams& alibi,
                                   RowMap m, int H, int hd, int cap, int max_rows,
                                   const uint8_t* head_mask, cudaStream_t stream) {
  if (hd == 64)
    return launch_backward<64, T>(dqkv, dctx, qkv, kc, vc, lse, D, slopes, alibi, m, H, cap,
                                  max_rows, head_mask, stream);
  if (hd == 128)
    return launch_backward<128, T>(dqkv, dctx, qkv, kc, vc, lse, D, slopes, alibi, m, H, cap,
                                   max_rows, head_mask, stream);
  unsupported(hd);
}

#define HS_INSTANTIATE(T)                                                                         \
  template void alibi_attention_forward_tc<T>(T*, float*, const float*, const float*,             \
                                              const float*, const float*, const AlibiParams&,     \
                                              RowMap, int, int, int, int, cudaStream_t, float*);  \
  template void attention_backward_tc_kernels<T>(                                                 \
      float*, const float*, const float*, const float*, const float*, const float*, const float*, \
      const float*, const AlibiParams&, RowMap, int, int, int, int, const uint8_t*, cudaStream_t);
HS_INSTANTIATE(__nv_bfloat16)
HS_INSTANTIATE(__half)
#undef HS_INSTANTIATE

}  // namespace hs::cuda
