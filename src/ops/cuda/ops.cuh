// CUDA operations of the block of every supported family, each named after its CPU twin in
// ops/cpu/ops.h (tests/test_cuda.cpp compares them) and computing the family conventions through
// the same shared numerics (ops/gelu.h, ops/alibi.h, ops/qkv_layout.h). Launchers enqueue on
// `stream` and return; W is the weight/GEMM-input type (float, __nv_bfloat16 or __half); the
// residual stream, GEMM outputs, attention and statistics are fp32.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "ops/adamw.h"
#include "ops/alibi.h"
#include "ops/gelu.h"

namespace hs::cuda {

// x[N, d] = fp32(emb[ids[i]]). Ids are checked on the host.
template <class W>
void embed_rows(float* x, const W* emb, const int32_t* ids, int N, int d, cudaStream_t stream);

// Per row: first the residual update that ends the previous sub-block, then LayerNorm (biased
// variance, eps):
//   x = (src ? src : x) + (y ? y + bias : 0)      (skipped when both src and y are null)
//   out = LN(x) * w + b as W (when out), and as fp32 into out32 (when out32; may alias x)
// src is the post-LN variant's residual (the previous LayerNorm's fp32 output). bias and b may
// be null (families without biases); w null: no LayerNorm, only the residual update.
template <class W>
struct LayerNormArgs {
  float* x;
  const float *y, *bias, *src;
  const float *w, *b;
  W* out;
  float* out32;
  int N, d;
  float eps;
};
template <class W>
void layernorm_forward(const LayerNormArgs<W>& a, cudaStream_t stream);

// dst[i, :] = src[rows[i], :] for i < n, rows of d floats.
void gather_rows(float* dst, const float* src, const int32_t* rows, int n, int d,
                 cudaStream_t stream);

// out[N, C] = gelu(h + bias) in the given form, as W; bias may be null.
template <class W>
void gelu_forward(W* out, const float* h, const float* bias, int N, int C, Gelu kind,
                  cudaStream_t stream);

// The MLP's up projection and activation: h32[N, C] = inp[N, IC] @ Wt[C, IC]^T (fp32, the
// pre-activation the backward reads), out = gelu(h32 + bias) as W. For the rows of a decoding
// step (cuda/gemv.cuh's gemv_fits) one kernel, the GELU in the product's epilogue; otherwise
// gemm_rows (on blas, whose stream must be `stream`), then gelu_forward. Both give the same
// values.
template <class W>
void linear_gelu_forward(W* out, float* h32, cublasHandle_t blas, const W* inp, const W* Wt,
                         const float* bias, int N, int IC, int C, Gelu kind, cudaStream_t stream);

// Where this pass's rows belong: row g (of N) is token r = g - q_row0[b] of the new tokens of
// sequence b = row_seq[g], at absolute position past[b] + r; sequence b has n_rows[b] new rows
// (0 for a sequence not in this pass). All arrays live on the device, so a captured CUDA graph
// can replay a decoding step with new positions.
struct RowMap {
  const int32_t* row_seq;  // [N]
  const int32_t* q_row0;   // [B]
  const int32_t* n_rows;   // [B]
  const int32_t* past;     // [B]
  int N, B;
};

// The fused qkv projection's output qkv[N, 3*H*hd] (internal layout, ops/qkv_layout.h) gets
// its bias (may be null) and, when clip > 0, the clamp to [-clip, clip] (MPT's clip_qkv); then
// the queries stay in place in qkv (the attention reads them there) and the keys and values go
// to the caches kc/vc laid out [B][H][cap][hd], at each row's absolute position. The key and
// value columns of qkv are left as they were.
void qkv_split(float* qkv, float* kc, float* vc, const float* bias, float clip, RowMap m, int H,
               int hd, int cap, cudaStream_t stream);

// The fused qkv projection and qkv_split: qkv[N, 3*H*hd] = inp[N, IC] @ Wt^T, with qkv_raw
// (when not null) a copy of that raw product (MPT's clamp backward reads it), then qkv_split.
// For the rows of a decoding step one kernel, the split in the product's epilogue; otherwise
// gemm_rows (on blas, whose stream must be `stream`), the copy, and qkv_split. Both give the
// same values.
template <class W>
void linear_qkv_forward(float* qkv, float* qkv_raw, float* kc, float* vc, cublasHandle_t blas,
                        const W* inp, const W* Wt, const float* bias, float clip, RowMap m, int IC,
                        int H, int hd, int cap, cudaStream_t stream);

// Causal ALiBi attention of the new rows (queries in qkv after qkv_split) against their
// sequence's cached keys 0..pos: score by alibi_score (ops/alibi.h) with slope[h] and the
// family's AlibiParams, softmax, times v, into ctx[N, H*hd] (as W). Never materialises T x T:
// softmax and statistics are accumulated key tile by key tile (ops/online_softmax.h). Optional
// outputs:
//   row_stats [3][H][N]: per row bos mass, entropy and local mass (keys pos-2..pos)
//   probs: sequence b's probabilities at probs + probs_off[b], laid out [H][n][past + n]
//          (entries after pos are left untouched: the caller zeroes the buffer)
//   lse [H][N]: per row the log-sum-exp of its scores (m + log l of the online softmax), which
//          alibi_attention_backward needs to recompute the probabilities
// max_rows bounds n_rows (grid size); hd <= 256.
template <class W>
void alibi_attention_forward(W* ctx, float* row_stats, float* probs, const int64_t* probs_off,
                             const float* qkv, const float* kc, const float* vc,
                             const float* slopes, const AlibiParams& alibi, RowMap m, int H, int hd,
                             int cap, int max_rows, cudaStream_t stream, float* lse = nullptr);

// The same on tensor cores (attention_tc.cu), for T = __nv_bfloat16 or __half: Q, K, V and the
// probabilities rounded to T for the products, fp32 accumulation and softmax; no probs output;
// head dimensions 64 and 128, operands 16-byte aligned. alibi_attention_forward takes this path
// by itself for 16-bit W when a sequence has kTensorCoreMinRows (attention_tc.cuh) or more rows
// and no probabilities are asked for.
template <class T>
void alibi_attention_forward_tc(T* ctx, float* row_stats, const float* qkv, const float* kc,
                                const float* vc, const float* slopes, const AlibiParams& alibi,
                                RowMap m, int H, int hd, int cap, int max_rows, cudaStream_t stream,
                                float* lse = nullptr);

// dqkv[N, 3*H*hd] += the gradient of a training pass's attention for the heads with
// head_mask[h] != 0 (a device array; null = all), in the internal layout (qkv_row). Every
// sequence's past must be 0 (a training pass holds all of its keys; not checked here, which would
// cost a stream synchronisation per call). Queries from qkv after qkv_split, keys and values from
// the caches, lse from the forward, ctx the forward's output (W) and dctx [N, H*hd] its gradient.
// D [H][N] is the caller's scratch (D = rowsum(dctx * ctx)). Probabilities are recomputed tile
// by tile (nothing T x T in memory): dk/dv by one kernel over key tiles, dq by one over query
// tiles; no atomics, deterministic.
// Twin of cpu::alibi_attention_backward; hd <= 256.
template <class W>
void alibi_attention_backward(float* dqkv, const float* dctx, const float* qkv, const float* kc,
                              const float* vc, const W* ctx, const float* lse, float* D,
                              const float* slopes, const AlibiParams& alibi, RowMap m, int H,
                              int hd, int cap, int max_rows, const uint8_t* head_mask,
                              cudaStream_t stream);

// The same on tensor cores (attention_tc.cu; T and head dimensions as for
// alibi_attention_forward_tc, whose lse it must be given: both round q and k to T). Taken by
// alibi_attention_backward by itself under the forward's rule.
template <class T>
void alibi_attention_backward_tc(float* dqkv, const float* dctx, const float* qkv, const float* kc,
                                 const float* vc, const T* ctx, const float* lse, float* D,
                                 const float* slopes, const AlibiParams& alibi, RowMap m, int H,
                                 int hd, int cap, int max_rows, const uint8_t* head_mask,
                                 cudaStream_t stream);

// MPT's clip_qkv, backward: dqkv[i] = 0 unless -c <= qkv_raw[i] + bias[i % C] <= c (bias may
// be null), over [N, C]: torch.clamp's gradient mask, from the raw GEMM output the forward kept.
// Twin of cpu::clamp_backward with cpu::clamp_forward's mask.
void clamp_backward(float* dqkv, const float* qkv_raw, const float* bias, int N, int C, float c,
                    cudaStream_t stream);

// Online log-sum-exp over vocabulary chunks (GPU twin of cpu::logsumexp_update): for each row of
// logits[N, Vc] (columns v0..v0+Vc of the vocabulary) update the running max m and scaled sum s,
// and copy the logit of target[row] into tgt when it falls in this chunk (target < 0: none).
void logsumexp_update(const float* logits, int N, int Vc, int v0, const int32_t* target, float* m,
                      double* s, float* tgt, cudaStream_t stream);
// lse[i] = float(double(m[i]) + log(s[i])) from logsumexp_update's final state, as the CPU's
// training loss computes it (engine/cpu/train.cpp).
void logsumexp_finish(float* lse, const float* m, const double* s, int N, cudaStream_t stream);
// Cross-entropy backward over one vocabulary chunk [v0, v0 + Vc), in place over logits[N, Vc]:
// scale[r] * (exp(logit - lse[r]) - [v0 + v == target[r]]), rows with target < 0 get 0. Twin of
// cpu::cross_entropy_backward.
void cross_entropy_backward(float* logits, const float* lse, const int32_t* target,
                            const float* scale, int N, int Vc, int v0, cudaStream_t stream);

// out[i] = the column of row i's largest value in x[N, C], the first among equals, as
// std::max_element returns it (eval/sampling.h's argmax, its twin): NaN is never chosen, except
// that a NaN in column 0 gives 0.
void argmax_rows(int32_t* out, const float* x, int N, int C, cudaStream_t stream);

// ---- Backward of the frozen operations (input gradients only) ----

// dinp[N, C] += dLN/dinp . dout for LayerNorm(inp) * w (+ b): no weight or bias gradient (frozen).
// Mean and rstd are recomputed from inp in double as layernorm_forward computes them. Twin of
// cpu::layernorm_backward with null dw/db.
void layernorm_backward(float* dinp, const float* dout, const float* inp, const float* w, int N,
                        int C, float eps, cudaStream_t stream);

// dinp[i] = dout[i] * gelu'(h[i] + bias[i % C]) over [N, C] (bias may be null; dinp may alias
// dout). Twin of cpu::gelu_backward on the pre-activation h + bias.
void gelu_backward(float* dinp, const float* dout, const float* h, const float* bias, int N, int C,
                   Gelu kind, cudaStream_t stream);

// ---- Surgical training: slices, optimizer ----

// out[i] = W(in[i]) (round to nearest) for n elements: fp32 gradients into the GEMM input type.
template <class W>
void to_weight_type(W* out, const float* in, int64_t n, cudaStream_t stream);
// A trained slice back into the working weights: a contiguous block of n elements (rows), and
// src[R, C] into columns of dst[R, ld_dst] (dst points at the first column), converted to W.
template <class W>
void copy_rows(W* dst, const float* src, int64_t n, cudaStream_t stream);
template <class W>
void copy_cols(W* dst, int ld_dst, const float* src, int R, int C, cudaStream_t stream);

// out[c] += sum over rows r < N of in[r * ld + c], c < C (a bias slice's gradient), in a fixed
// order: deterministic.
void column_sums(float* out, const float* in, int ld, int N, int C, cudaStream_t stream);

// One AdamW step over n fp32 parameters (ops/adamw.h's adamw_update): bit-identical to
// cpu::adamw_step (its file is compiled without FMA contraction).
void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& s,
                cudaStream_t stream);
// *out = sum of x[i]^2 in double over n elements, in a fixed order (deterministic; the global
// gradient norm). Its per-block partial sums live in a stream-ordered allocation.
void sum_squares(double* out, const float* x, int64_t n, cudaStream_t stream);
// x[i] *= s over n elements (gradient clipping).
void scale_inplace(float* x, int64_t n, float s, cudaStream_t stream);

}  // namespace hs::cuda
