#include "engine/cpu/forward.h"

#include <algorithm>
#include <cmath>

#include "engine/cpu/block.h"
#include "engine/cpu/decoder.h"
#include "util/interrupt.h"

namespace hs {

namespace {

void lm_head(WeightSource& model, const std::vector<std::vector<float>>& xf,
             const std::vector<std::vector<int32_t>>& seqs, const ForwardOptions& opts,
             std::vector<SequenceOutput>& out) {
  const ModelConfig& c = model.config();
  const int64_t d = c.hidden, V = c.vocab;
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
  for_each_head_chunk(model, [&](const HeadChunk& E) {
    const int64_t r0 = E.r0, rows = E.rows;
    for (size_t i = 0; i < n; ++i) {
      check_interrupted();
      const int64_t T = int64_t(seqs[i].size());
      chunk.resize(T * rows);
      head_logits(chunk.data(), rows, xf[i].data(), E, T, d, c.logit_scale);
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

void embed_rows(WeightSource& w, std::span<const int32_t> ids, float* x) {
  const ModelConfig& c = w.config();
  w.embed(ids, x);
  if (c.emb_norm)
    cpu::layernorm_forward<float>(x, nullptr, nullptr, x, w.norm(ModelRole::emb_norm),
                                  w.norm(ModelRole::emb_norm_b), int64_t(ids.size()), c.hidden,
                                  float(c.ln_eps));
}

std::vector<SequenceOutput> forward(WeightSource& model,
                                    const std::vector<std::vector<int32_t>>& seqs,
                                    const ForwardOptions& opts) {
  const ModelConfig& c = model.config();
  const int64_t d = c.hidden, H = c.n_head, L = c.n_layer;
  const size_t n = seqs.size();
  std::vector<SequenceOutput> out(n);
  std::vector<std::vector<float>> x(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t T = int64_t(seqs[i].size());
    x[i].resize(T * d);
    embed_rows(model, seqs[i], x[i].data());
    if (opts.head_stats) {
      out[i].bos_mass.assign(L * H, 0);
      out[i].entropy.assign(L * H, 0);
      out[i].local_mass.assign(L * H, 0);
    }
    if (opts.probs) out[i].probs.resize(L);
  }
  BlockActs acts;
  for (int64_t l = 0; l < L; ++l) {
    auto w = model.inference_layer(l);
    for (size_t i = 0; i < n; ++i) {
      check_interrupted();
      const int64_t T = int64_t(seqs[i].size());
      if (T == 0) continue;
      cpu::HeadStatSums stats{};
      BlockSegment seg{0, T};
      if (opts.head_stats) {
        stats = {out[i].bos_mass.data() + l * H, out[i].entropy.data() + l * H,
                 out[i].local_mass.data() + l * H};
        seg.stats = &stats;
      }
      if (opts.probs) {
        out[i].probs[l].assign(H * T * T, 0.0f);
        seg.probs = out[i].probs[l].data();
      }
      block_forward(x[i].data(), T, {&seg, 1}, c, *w, model.slopes().data(), acts, false,
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
    cpu::layernorm_forward<float>(x[i].data(), nullptr, nullptr, x[i].data(),
                                  model.norm(ModelRole::out_norm),
                                  model.norm(ModelRole::out_norm_b), T, d, float(c.ln_eps));
  }
  lm_head(model, x, seqs, opts, out);
  return out;
}

std::unique_ptr<IncrementalDecoder> CpuEngine::decoder(int64_t batch, int64_t capacity) {
  return std::make_unique<Decoder>(w_, batch, capacity);
}

}  // namespace hs
