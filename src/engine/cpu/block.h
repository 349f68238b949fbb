// The transformer block of every supported family on the CPU, written once (docs/numerics.md):
//   a = LN1(x); qkv = a Wqkv^T + b [clamped]; ctx = ALiBi attention; x = ctx Wo^T + bo + res
//   b = LN2(x); x = gelu(b Wup^T + b_up) Wdown^T + b_down + res   (res: x, or LN out if post-LN)
// Inference over whole sequences, training (activations kept for the backward) and KV-cache
// decoding all run through block_forward; the rows of a pass are described by segments, one per
// sequence, that say where each sequence's keys and values live (the GPU block's RowMap).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "engine/cpu/weights.h"
#include "ops/cpu/ops.h"

namespace hs {

// One sequence's rows in a pass through a block.
struct BlockSegment {
  int64_t row0 = 0, rows = 0;  // rows [row0, row0 + rows) of the pass
  int64_t past = 0;            // tokens before them: their positions are past, past + 1, ...
  // Where the sequence's keys and values live. Null: in this pass's own rows (past must be 0).
  // Else this layer's cache of the sequence, [H][cap][hd] each; the new rows are stored first.
  float *k_cache = nullptr, *v_cache = nullptr;
  int64_t cap = 0;
  cpu::HeadStatSums* stats = nullptr;  // per-head sums over the segment's rows (optional)
  float* probs = nullptr;              // [H, rows, past + rows] (optional)
};

// Buffers of one block's pass, reused from pass to pass; with for_backward they keep what the
// backward needs (x_in, x_mid, the norms' statistics, pre and post activation, the clip mask).
struct BlockActs {
  std::vector<float> x_in, ln1_mean, ln1_rstd, a, qkv, ctx, y, x_mid, ln2_mean, ln2_rstd, b, pre, h;
  std::vector<uint8_t> clip_mask;
};

// x[N, d] (the residual stream) goes through the block in place. skip_mlp: the MLP adds
// nothing (ablation). Thread-parallel inside each operation.
void block_forward(float* x, int64_t N, std::span<const BlockSegment> segs, const ModelConfig& c,
                   const LayerWeights& w, const float* slopes, BlockActs& s, bool for_backward,
                   bool skip_mlp = false);

// Weight gradients of one layer by role; null = no gradient (a frozen parameter).
struct LayerGrads {
  std::array<float*, kLayerRoles> t{};
  float* operator[](LayerRole r) const { return t[int(r)]; }
};

// The gradient slices of one surgical target head of a layer: its Q/K/V rows of wqkv [3hd, d]
// (internal order: q, k, v), their bias [3hd] (null without one), and its input columns of wo
// as [d, hd].
struct HeadSliceGrads {
  int64_t head;
  float *wqkv, *bqkv, *wo_cols;
};

// The demo recipe's induced collapse in this layer (engine/cpu/train.h, SinkTerm).
struct LayerSink {
  const uint8_t* heads;  // [H]
  float weight;
  double* loss;  // the term's value is added here
};

// Backward of one sequence (T rows, keys its own rows) through the block whose forward saved
// `s`. dx: gradient w.r.t. the block output on entry, w.r.t. its input on exit (when
// need_input_grad). Weight gradients go to `full` (non-null entries) and to the target slices;
// no other weight gradient is computed. The sink term's gradient reaches only the chosen heads'
// wqkv rows and bias in `full`.
void block_backward(std::vector<float>& dx, int64_t T, const ModelConfig& c, const LayerWeights& w,
                    const float* slopes, const BlockActs& s, bool need_input_grad,
                    const LayerGrads& full, std::span<const HeadSliceGrads> slices,
                    const LayerSink* sink);

// Vocabulary rows per output-head chunk: bounds the fp32 logits of a chunk to ~T x 8192 floats.
constexpr int64_t kVocabChunk = 8192;

// out[N, n] (row stride ldo) = logit_scale * x[N, d] @ E[n, d]^T: one chunk of the output head.
void head_logits(float* out, int64_t ldo, const float* x, const float* E, int64_t N, int64_t d,
                 int64_t n, double logit_scale);

// Rows [r0, r0 + rows) of an inference pass's output head: fp32, or bf16 where the source runs
// bf16 products (WeightSource::head_bf16) with kernel; the other pointer is null.
struct HeadChunk {
  int64_t r0, rows;
  const float* f32;
  const uint16_t* bf16;
  cpu::Bf16Kernel kernel;
};
// Calls fn over the output head of w in chunks of kVocabChunk rows.
void for_each_head_chunk(WeightSource& w, const std::function<void(const HeadChunk&)>& fn);
// head_logits over one such chunk: out[N, E.rows].
void head_logits(float* out, int64_t ldo, const float* x, const HeadChunk& E, int64_t N, int64_t d,
                 double logit_scale);

}  // namespace hs
