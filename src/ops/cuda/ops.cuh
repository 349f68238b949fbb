// CUDA operations of the BLOOM forward pass (DESIGN §2), each the GPU twin of a CPU reference
// in ops/cpu (tests/test_cuda_ops.cpp compares them). Launchers enqueue on `stream` and return;
// W is the weight/GEMM-input type (float, __nv_bfloat16 or __half); the residual stream, GEMM
// outputs, attention and statistics are fp32.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace hs::cuda {

// x[N, d] = fp32(emb[ids[i]]). Ids are checked on the host.
template <class W>
void embed_rows(float* x, const W* emb, const int32_t* ids, int N, int d, cudaStream_t stream);

// Per row: first the residual update, then LayerNorm (biased variance, eps):
//   x = (src ? src : x) + (y ? y + bias : 0)      (skipped when both src and y are null)
//   out = LN(x) * w + b as W (when out), and as fp32 into out32 (when out32; may alias x)
// src is the post-LN variant's residual (the previous LayerNorm's fp32 output).
template <class W>
struct AddLayerNorm {
  float* x;
  const float *y, *bias, *src;
  const float *w, *b;  // null: no LayerNorm, only the residual update
  W* out;
  float* out32;
  int N, d;
  float eps;
};
template <class W>
void add_layernorm(const AddLayerNorm<W>& a, cudaStream_t stream);

// dst[i, :] = src[rows[i], :] for i < n, rows of d floats.
void gather_rows(float* dst, const float* src, const int32_t* rows, int n, int d,
                 cudaStream_t stream);

// out[N, C] = gelu_tanh(h + bias) as W.
template <class W>
void bias_gelu(W* out, const float* h, const float* bias, int N, int C, cudaStream_t stream);

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

// Adds the qkv bias and splits BLOOM's fused per-head [q | k | v] columns: q into q[N, H*hd],
// k and v into the caches kc/vc laid out [B][H][cap][hd] at each row's absolute position.
void qkv_split(float* q, float* kc, float* vc, const float* qkv, const float* bias, RowMap m, int H,
               int hd, int cap, cudaStream_t stream);

// Causal ALiBi attention of the new rows against their sequence's cached keys 0..pos:
// score = q.k / sqrt(hd) + slope[h] * j, softmax, times v, into ctx[N, H*hd] (as W). Never
// materialises T x T: softmax and statistics are accumulated key tile by key tile
// (ops/online_softmax.h). Optional outputs:
//   row_stats [3][H][N]: per row bos mass, entropy and local mass (keys pos-2..pos)
//   probs: sequence b's probabilities at probs + probs_off[b], laid out [H][n][past + n]
//          (entries after pos are left untouched: the caller zeroes the buffer)
// max_rows bounds n_rows (grid size); hd <= 256.
template <class W>
void alibi_attention(W* ctx, float* row_stats, float* probs, const int64_t* probs_off,
                     const float* q, const float* kc, const float* vc, const float* slopes,
                     RowMap m, int H, int hd, int cap, int max_rows, cudaStream_t stream);

// Online log-sum-exp over vocabulary chunks (GPU twin of cpu::logsumexp_update): for each row of
// logits[N, Vc] (columns v0..v0+Vc of the vocabulary) update the running max m and scaled sum s,
// and copy the logit of target[row] into tgt when it falls in this chunk (target < 0: none).
void logsumexp_update(const float* logits, int N, int Vc, int v0, const int32_t* target, float* m,
                      double* s, float* tgt, cudaStream_t stream);

}  // namespace hs::cuda
