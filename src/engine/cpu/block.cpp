#include "engine/cpu/block.h"

#include <algorithm>

namespace hs {

namespace {

void resize_acts(BlockActs& s, int64_t N, const ModelConfig& c, bool for_backward) {
  const int64_t d = c.hidden;
  for (auto* v : {&s.a, &s.ctx, &s.y, &s.b}) v->resize(N * d);
  s.qkv.resize(N * 3 * d);
  s.pre.resize(N * c.ffn);
  if (!for_backward) return;
  for (auto* v : {&s.x_in, &s.x_mid}) v->resize(N * d);
  for (auto* v : {&s.ln1_mean, &s.ln1_rstd, &s.ln2_mean, &s.ln2_rstd}) v->resize(N);
  s.h.resize(N * c.ffn);
  if (c.clip_qkv > 0) s.clip_mask.resize(N * 3 * d);
}

void attention(const BlockSegment& g, BlockActs& s, const ModelConfig& c, const float* slopes) {
  const int64_t d = c.hidden, H = c.n_head, hd = c.head_dim();
  const float* qkv = s.qkv.data() + g.row0 * 3 * d;
  cpu::AttnInput<float> in = cpu::fused_qkv(qkv, g.rows, H, hd);
  if (g.k_cache) {
    // Every new key and value goes into the cache first: later rows of a segment attend to
    // earlier ones of the same segment.
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t at = (h * g.cap + g.past + r) * hd;
        std::copy_n(qkv + r * 3 * d + qkv_row(h, 1, hd), hd, g.k_cache + at);
        std::copy_n(qkv + r * 3 * d + qkv_row(h, 2, hd), hd, g.v_cache + at);
      }
    in.k = g.k_cache;
    in.v = g.v_cache;
    in.ldkv = hd;
    in.hskv = g.cap * hd;
    in.past = g.past;
  }
  cpu::alibi_attention_forward<float>(s.ctx.data() + g.row0 * d, d, g.probs, g.stats, in, slopes,
                                      c.alibi, H, hd);
}

// A linear layer of the block: bf16 products where the weights are bf16 (inference_layer).
void linear(float* out, const float* inp, const LayerWeights& w, LayerRole W, LayerRole b,
            int64_t N, int64_t IC, int64_t OC) {
  if (const uint16_t* w16 = w.bf16[int(W)])
    cpu::linear_forward_bf16(out, OC, inp, w16, w[b], N, IC, OC, w.kernel);
  else
    cpu::linear_forward<float>(out, inp, w[W], w[b], N, IC, OC);
}

// MPT's logit_scale over out[N, n] (row stride ldo).
void scale_logits(float* out, int64_t ldo, int64_t N, int64_t n, double logit_scale) {
  if (logit_scale != 1)
    for (int64_t i = 0; i < N; ++i)
      for (int64_t v = 0; v < n; ++v) out[i * ldo + v] *= float(logit_scale);
}

}  // namespace

void block_forward(float* x, int64_t N, std::span<const BlockSegment> segs, const ModelConfig& c,
                   const LayerWeights& w, const float* slopes, BlockActs& s, bool for_backward,
                   bool skip_mlp) {
  using R = LayerRole;
  const int64_t d = c.hidden, F = c.ffn;
  const float eps = float(c.ln_eps);
  resize_acts(s, N, c, for_backward);
  float* ln1_mean = for_backward ? s.ln1_mean.data() : nullptr;
  float* ln1_rstd = for_backward ? s.ln1_rstd.data() : nullptr;
  float* ln2_mean = for_backward ? s.ln2_mean.data() : nullptr;
  float* ln2_rstd = for_backward ? s.ln2_rstd.data() : nullptr;
  if (for_backward) std::copy_n(x, N * d, s.x_in.data());

  cpu::layernorm_forward<float>(s.a.data(), ln1_mean, ln1_rstd, x, w[R::attn_norm],
                                w[R::attn_norm_b], N, d, eps);
  linear(s.qkv.data(), s.a.data(), w, R::wqkv, R::bqkv, N, d, 3 * d);
  if (c.clip_qkv > 0)
    cpu::clamp_forward<float>(s.qkv.data(), for_backward ? s.clip_mask.data() : nullptr, N * 3 * d,
                              float(c.clip_qkv));
  for (const BlockSegment& g : segs) attention(g, s, c, slopes);
  linear(s.y.data(), s.ctx.data(), w, R::wo, R::bo, N, d, d);
  // x = attention output + residual, where the residual is LN1(x) in the post-LN variant.
  if (c.post_ln) std::copy_n(s.a.data(), N * d, x);
  cpu::residual_add<float>(x, s.y.data(), N * d);
  if (for_backward) std::copy_n(x, N * d, s.x_mid.data());

  cpu::layernorm_forward<float>(s.b.data(), ln2_mean, ln2_rstd, x, w[R::ffn_norm], w[R::ffn_norm_b],
                                N, d, eps);
  if (skip_mlp) {  // ablation: the MLP adds nothing, the residual passes through
    if (c.post_ln) std::copy_n(s.b.data(), N * d, x);
    return;
  }
  linear(s.pre.data(), s.b.data(), w, R::ffn_up, R::ffn_up_b, N, d, F);
  // Inference applies the activation in place, vectorised (gelu_forward_fast; glibc's tanhf was
  // a fifth of a CPU diagnosis); the backward needs the pre-activation and gelu_forward's values.
  float* h = for_backward ? s.h.data() : s.pre.data();
  if (for_backward)
    cpu::gelu_forward<float>(h, s.pre.data(), N * F, c.act);
  else
    cpu::gelu_forward_fast(h, s.pre.data(), N * F, c.act);
  linear(s.y.data(), h, w, R::ffn_down, R::ffn_down_b, N, F, d);
  if (c.post_ln) std::copy_n(s.b.data(), N * d, x);
  cpu::residual_add<float>(x, s.y.data(), N * d);
}

void block_backward(std::vector<float>& dx, int64_t T, const ModelConfig& c, const LayerWeights& w,
                    const float* slopes, const BlockActs& s, bool need_input_grad,
                    const LayerGrads& full, std::span<const HeadSliceGrads> slices,
                    const LayerSink* sink) {
  using R = LayerRole;
  const int64_t d = c.hidden, H = c.n_head, hd = c.head_dim(), F = c.ffn;
  // MLP.
  std::vector<float> dh(T * F), db(T * d), dmid(T * d, 0.0f);
  cpu::linear_backward_input<float>(dh.data(), dx.data(), w[R::ffn_down], T, F, d, false);
  if (full[R::ffn_down])
    cpu::linear_backward_weight<float>(full[R::ffn_down], F, full[R::ffn_down_b], dx.data(), d,
                                       s.h.data(), F, T, d, F);
  cpu::gelu_backward<float>(dh.data(), dh.data(), s.pre.data(), T * F, c.act);
  cpu::linear_backward_input<float>(db.data(), dh.data(), w[R::ffn_up], T, d, F, false);
  if (full[R::ffn_up])
    cpu::linear_backward_weight<float>(full[R::ffn_up], d, full[R::ffn_up_b], dh.data(), F,
                                       s.b.data(), d, T, F, d);
  if (c.post_ln) cpu::residual_add<float>(db.data(), dx.data(), T * d);
  cpu::layernorm_backward<float>(dmid.data(), full[R::ffn_norm], full[R::ffn_norm_b], db.data(),
                                 s.x_mid.data(), w[R::ffn_norm], s.ln2_mean.data(),
                                 s.ln2_rstd.data(), T, d);
  if (!c.post_ln) cpu::residual_add<float>(dmid.data(), dx.data(), T * d);

  // Attention.
  std::vector<float> dctx(T * d), dqkv(T * 3 * d, 0.0f);
  cpu::linear_backward_input<float>(dctx.data(), dmid.data(), w[R::wo], T, d, d, false);
  if (full[R::wo])
    cpu::linear_backward_weight<float>(full[R::wo], d, full[R::bo], dmid.data(), d, s.ctx.data(), d,
                                       T, d, d);
  for (const HeadSliceGrads& g : slices)
    cpu::linear_backward_weight<float>(g.wo_cols, hd, nullptr, dmid.data(), d,
                                       s.ctx.data() + g.head * hd, d, T, d, hd);
  // Without an input gradient only the target heads' Q/K/V gradients are needed.
  std::vector<uint8_t> mask;
  if (!need_input_grad && !full[R::wqkv]) {
    mask.assign(H, 0);
    for (const HeadSliceGrads& g : slices) mask[g.head] = 1;
  }
  cpu::alibi_attention_backward<float>(dqkv.data(), dctx.data(), s.qkv.data(), slopes, c.alibi,
                                       mask.empty() ? nullptr : mask.data(), T, H, hd);
  if (c.clip_qkv > 0) cpu::clamp_backward<float>(dqkv.data(), s.clip_mask.data(), T * 3 * d);
  if (full[R::wqkv])
    cpu::linear_backward_weight<float>(full[R::wqkv], d, full[R::bqkv], dqkv.data(), 3 * d,
                                       s.a.data(), d, T, 3 * d, d);
  if (sink) {
    // The sink term trains only the collapsing heads' own Q/K rows: it stops at the qkv
    // projection, so the residual stream (and the language model) is not bent towards it.
    std::vector<float> dsink(T * 3 * d, 0.0f);
    *sink->loss += cpu::alibi_sink_loss_backward<float>(dsink.data(), s.qkv.data(), slopes, c.alibi,
                                                        sink->heads, sink->weight, T, H, hd);
    for (int64_t h = 0; h < H; ++h)
      if (sink->heads[h]) {
        const int64_t r0 = qkv_row(h, 0, hd);
        cpu::linear_backward_weight<float>(full[R::wqkv] + r0 * d, d,
                                           full[R::bqkv] ? full[R::bqkv] + r0 : nullptr,
                                           dsink.data() + r0, 3 * d, s.a.data(), d, T, 3 * hd, d);
      }
  }
  for (const HeadSliceGrads& g : slices)
    cpu::linear_backward_weight<float>(g.wqkv, d, g.bqkv, dqkv.data() + qkv_row(g.head, 0, hd),
                                       3 * d, s.a.data(), d, T, 3 * hd, d);
  if (!need_input_grad) return;
  std::vector<float> da(T * d);
  cpu::linear_backward_input<float>(da.data(), dqkv.data(), w[R::wqkv], T, d, 3 * d, false);
  if (c.post_ln) cpu::residual_add<float>(da.data(), dmid.data(), T * d);
  std::fill(dx.begin(), dx.end(), 0.0f);
  cpu::layernorm_backward<float>(dx.data(), full[R::attn_norm], full[R::attn_norm_b], da.data(),
                                 s.x_in.data(), w[R::attn_norm], s.ln1_mean.data(),
                                 s.ln1_rstd.data(), T, d);
  if (!c.post_ln) cpu::residual_add<float>(dx.data(), dmid.data(), T * d);
}

void head_logits(float* out, int64_t ldo, const float* x, const float* E, int64_t N, int64_t d,
                 int64_t n, double logit_scale) {
  if (N > 2)
    cpu::gemm<float>(false, true, N, n, d, 1.0f, x, d, E, d, 0.0f, out, ldo);
  else  // linear_forward's one-row path (sgemv)
    for (int64_t i = 0; i < N; ++i)
      cpu::linear_forward<float>(out + i * ldo, x + i * d, E, nullptr, 1, d, n);
  scale_logits(out, ldo, N, n, logit_scale);
}

void for_each_head_chunk(WeightSource& w, const std::function<void(const HeadChunk&)>& fn) {
  if (const uint16_t* E = w.head_bf16()) {
    const int64_t V = w.config().vocab, d = w.config().hidden;
    for (int64_t r = 0; r < V; r += kVocabChunk)
      fn({r, std::min(kVocabChunk, V - r), nullptr, E + r * d, w.bf16_kernel()});
    return;
  }
  w.for_each_vocab_chunk(kVocabChunk, [&](int64_t r0, int64_t rows, const float* E) {
    fn({r0, rows, E, nullptr, cpu::Bf16Kernel::none});
  });
}

void head_logits(float* out, int64_t ldo, const float* x, const HeadChunk& E, int64_t N, int64_t d,
                 double logit_scale) {
  if (!E.bf16) return head_logits(out, ldo, x, E.f32, N, d, E.rows, logit_scale);
  cpu::linear_forward_bf16(out, ldo, x, E.bf16, nullptr, N, d, E.rows, E.kernel);
  scale_logits(out, ldo, N, E.rows, logit_scale);
}

}  // namespace hs
