#include "model/forward.h"

#include <algorithm>
#include <cmath>

#include "ops/cpu/ops.h"

namespace hs {

namespace {

// Scratch buffers of one block, sized for the longest sequence and reused.
struct Scratch {
  std::vector<float> a, qkv, ctx, attn_out, b, h;
  Scratch(int64_t T, int64_t d)
      : a(T * d), qkv(T * 3 * d), ctx(T * d), attn_out(T * d), b(T * d), h(T * 4 * d) {}
};

void block_forward(float* x, int64_t T, const BloomConfig& c, const LayerWeights& w,
                   const float* slopes, Scratch& s, cpu::HeadStatSums* stats, float* probs,
                   bool skip_mlp) {
  const int64_t d = c.hidden, H = c.n_head, hd = c.head_dim();
  const float eps = float(c.ln_eps);
  cpu::layernorm_forward<float>(s.a.data(), nullptr, nullptr, x, w.ln1_w.data, w.ln1_b.data, T, d,
                                eps);
  cpu::linear_forward<float>(s.qkv.data(), s.a.data(), w.qkv_w.data, w.qkv_b.data, T, d, 3 * d);
  cpu::alibi_attention_forward<float>(s.ctx.data(), probs, stats, s.qkv.data(), slopes, T, H, hd);
  cpu::linear_forward<float>(s.attn_out.data(), s.ctx.data(), w.dense_w.data, w.dense_b.data, T, d,
                             d);
  // x = attn_out + residual, where the residual is LN1(x) in the post-LN variant.
  if (c.post_ln) std::copy_n(s.a.data(), T * d, x);
  cpu::residual_add<float>(x, s.attn_out.data(), T * d);
  cpu::layernorm_forward<float>(s.b.data(), nullptr, nullptr, x, w.ln2_w.data, w.ln2_b.data, T, d,
                                eps);
  if (skip_mlp) {  // ablation: the MLP adds nothing, the residual passes through
    if (c.post_ln) std::copy_n(s.b.data(), T * d, x);
    return;
  }
  cpu::linear_forward<float>(s.h.data(), s.b.data(), w.fc1_w.data, w.fc1_b.data, T, d, 4 * d);
  cpu::gelu_forward<float>(s.h.data(), s.h.data(), T * 4 * d);
  cpu::linear_forward<float>(s.attn_out.data(), s.h.data(), w.fc2_w.data, w.fc2_b.data, T, 4 * d,
                             d);
  if (c.post_ln) std::copy_n(s.b.data(), T * d, x);
  cpu::residual_add<float>(x, s.attn_out.data(), T * d);
}

// Vocabulary rows per lm_head chunk: bounds the fp32 logits of a chunk to ~T x 8192 floats.
constexpr int64_t kVocabChunk = 8192;

void lm_head(WeightSource& model, const std::vector<std::vector<float>>& xf,
             const std::vector<std::vector<int32_t>>& seqs, const ForwardOptions& opts,
             std::vector<SequenceOutput>& out) {
  const int64_t d = model.config().hidden, V = model.config().vocab;
  const size_t n = seqs.size();
  std::vector<std::vector<float>> run_max(n);
  std::vector<std::vector<double>> run_sum(n);
  std::vector<std::vector<float>> target_logit(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t T = int64_t(seqs[i].size());
    if (opts.logits) out[i].logits.assign(T * V, 0.0f);
    run_max[i].assign(T, -INFINITY);
    run_sum[i].assign(T, 0.0);
    target_logit[i].assign(T, 0.0f);
  }
  std::vector<float> chunk;
  model.for_each_vocab_chunk(kVocabChunk, [&](int64_t r0, int64_t rows, const float* E) {
    for (size_t i = 0; i < n; ++i) {
      const int64_t T = int64_t(seqs[i].size());
      chunk.resize(T * rows);
      cpu::linear_forward<float>(chunk.data(), xf[i].data(), E, nullptr, T, d, rows);
      if (opts.logits)
        for (int64_t t = 0; t < T; ++t)
          std::copy_n(chunk.data() + t * rows, rows, out[i].logits.data() + t * V + r0);
      if (!opts.nll) continue;
      cpu::logsumexp_update(chunk.data(), T, rows, run_max[i].data(), run_sum[i].data());
      for (int64_t t = 0; t + 1 < T; ++t) {
        const int64_t target = seqs[i][t + 1];
        if (target >= r0 && target < r0 + rows) target_logit[i][t] = chunk[t * rows + target - r0];
      }
    }
  });
  if (!opts.nll) return;
  for (size_t i = 0; i < n; ++i) {
    const int64_t T = int64_t(seqs[i].size());
    double nll = 0;
    for (int64_t t = 0; t + 1 < T; ++t)
      nll += double(run_max[i][t]) + std::log(run_sum[i][t]) - double(target_logit[i][t]);
    out[i].nll_sum = nll;
    out[i].predicted = std::max<int64_t>(T - 1, 0);
  }
}

}  // namespace

std::vector<SequenceOutput> forward(WeightSource& model,
                                    const std::vector<std::vector<int32_t>>& seqs,
                                    const ForwardOptions& opts) {
  const BloomConfig& c = model.config();
  const int64_t d = c.hidden, H = c.n_head, L = c.n_layer;
  const float eps = float(c.ln_eps);
  const size_t n = seqs.size();
  std::vector<SequenceOutput> out(n);
  std::vector<std::vector<float>> x(n);
  int64_t Tmax = 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t T = int64_t(seqs[i].size());
    Tmax = std::max(Tmax, T);
    x[i].resize(T * d);
    model.embed(seqs[i], x[i].data());
    cpu::layernorm_forward<float>(x[i].data(), nullptr, nullptr, x[i].data(), model.emb_ln_w(),
                                  model.emb_ln_b(), T, d, eps);
    if (opts.head_stats) {
      out[i].bos_mass.assign(L * H, 0);
      out[i].entropy.assign(L * H, 0);
      out[i].local_mass.assign(L * H, 0);
    }
    if (opts.probs) out[i].probs.resize(L);
  }
  Scratch s(Tmax, d);
  for (int64_t l = 0; l < L; ++l) {
    auto w = model.layer(l);
    for (size_t i = 0; i < n; ++i) {
      const int64_t T = int64_t(seqs[i].size());
      if (T == 0) continue;
      cpu::HeadStatSums stats{};
      if (opts.head_stats)
        stats = {out[i].bos_mass.data() + l * H, out[i].entropy.data() + l * H,
                 out[i].local_mass.data() + l * H};
      float* probs = nullptr;
      if (opts.probs) {
        out[i].probs[l].assign(H * T * T, 0.0f);
        probs = out[i].probs[l].data();
      }
      block_forward(x[i].data(), T, c, *w, model.slopes().data(), s,
                    opts.head_stats ? &stats : nullptr, probs,
                    !opts.ablate_mlp.empty() && opts.ablate_mlp[l]);
      if (opts.head_stats)
        for (int64_t h = 0; h < H; ++h) {
          stats.bos[h] /= double(T);
          stats.entropy[h] /= double(T);
          stats.local[h] /= double(T);
        }
    }
    if (opts.progress) opts.progress(l + 1, L);
  }
  if (!opts.logits && !opts.nll) return out;
  for (size_t i = 0; i < n; ++i) {
    const int64_t T = int64_t(seqs[i].size());
    cpu::layernorm_forward<float>(x[i].data(), nullptr, nullptr, x[i].data(), model.lnf_w(),
                                  model.lnf_b(), T, d, eps);
  }
  lm_head(model, x, seqs, opts, out);
  return out;
}

}  // namespace hs
