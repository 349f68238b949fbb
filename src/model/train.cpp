#include "model/train.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "ops/cpu/ops.h"
#include "util/error.h"

namespace hs {

namespace {

std::vector<float> copy_of(const F32Tensor& t) { return {t.data, t.data + t.numel}; }

// What one block's backward needs from its forward.
struct LayerActs {
  std::vector<float> x_in, ln1_mean, ln1_rstd, a, qkv, ctx, x_mid, ln2_mean, ln2_rstd, b, pre, h;
  void resize(int64_t T, int64_t d) {
    for (auto* v : {&x_in, &a, &ctx, &x_mid, &b}) v->resize(T * d);
    for (auto* v : {&ln1_mean, &ln1_rstd, &ln2_mean, &ln2_rstd}) v->resize(T);
    qkv.resize(T * 3 * d);
    pre.resize(T * 4 * d);
    h.resize(T * 4 * d);
  }
};

void block_forward(std::vector<float>& x, const TrainLayer& w, const BloomConfig& c,
                   const float* slopes, int64_t T, LayerActs& s) {
  const int64_t d = c.hidden;
  const float eps = float(c.ln_eps);
  s.resize(T, d);
  s.x_in = x;
  cpu::layernorm_forward<float>(s.a.data(), s.ln1_mean.data(), s.ln1_rstd.data(), s.x_in.data(),
                                w.ln1_w.data(), w.ln1_b.data(), T, d, eps);
  cpu::linear_forward<float>(s.qkv.data(), s.a.data(), w.qkv_w.data(), w.qkv_b.data(), T, d, 3 * d);
  cpu::alibi_attention_forward<float>(s.ctx.data(), nullptr, nullptr, s.qkv.data(), slopes, T,
                                      c.n_head, c.head_dim());
  cpu::linear_forward<float>(x.data(), s.ctx.data(), w.dense_w.data(), w.dense_b.data(), T, d, d);
  cpu::residual_add<float>(x.data(), c.post_ln ? s.a.data() : s.x_in.data(), T * d);
  s.x_mid = x;
  cpu::layernorm_forward<float>(s.b.data(), s.ln2_mean.data(), s.ln2_rstd.data(), s.x_mid.data(),
                                w.ln2_w.data(), w.ln2_b.data(), T, d, eps);
  cpu::linear_forward<float>(s.pre.data(), s.b.data(), w.fc1_w.data(), w.fc1_b.data(), T, d, 4 * d);
  cpu::gelu_forward<float>(s.h.data(), s.pre.data(), T * 4 * d);
  cpu::linear_forward<float>(x.data(), s.h.data(), w.fc2_w.data(), w.fc2_b.data(), T, 4 * d, d);
  cpu::residual_add<float>(x.data(), c.post_ln ? s.b.data() : s.x_mid.data(), T * d);
}

// Targets of one layer: head index → slot in Gradients' per-target vectors.
using LayerTargets = std::vector<std::pair<int, size_t>>;

// dx: gradient w.r.t. the block output on entry, w.r.t. the block input on exit (when
// need_input_grad). Weight gradients go to gl (full mode) or to the target slices.
void block_backward(std::vector<float>& dx, const TrainLayer& w, const BloomConfig& c,
                    const float* slopes, int64_t T, const LayerActs& s, bool need_input_grad,
                    TrainLayer* gl, const LayerTargets& targets, Gradients& g,
                    const uint8_t* sink_heads, float sink_weight, double& sink_loss) {
  const int64_t d = c.hidden, H = c.n_head, hd = c.head_dim();
  const bool full = gl != nullptr;
  // MLP.
  std::vector<float> dh(T * 4 * d), db(T * d), dmid(T * d, 0.0f);
  cpu::linear_backward_input<float>(dh.data(), dx.data(), w.fc2_w.data(), T, 4 * d, d, false);
  if (full)
    cpu::linear_backward_weight<float>(gl->fc2_w.data(), 4 * d, gl->fc2_b.data(), dx.data(), d,
                                       s.h.data(), 4 * d, T, d, 4 * d);
  cpu::gelu_backward<float>(dh.data(), dh.data(), s.pre.data(), T * 4 * d);
  cpu::linear_backward_input<float>(db.data(), dh.data(), w.fc1_w.data(), T, d, 4 * d, false);
  if (full)
    cpu::linear_backward_weight<float>(gl->fc1_w.data(), d, gl->fc1_b.data(), dh.data(), 4 * d,
                                       s.b.data(), d, T, 4 * d, d);
  if (c.post_ln) cpu::residual_add<float>(db.data(), dx.data(), T * d);
  cpu::layernorm_backward<float>(dmid.data(), full ? gl->ln2_w.data() : nullptr,
                                 full ? gl->ln2_b.data() : nullptr, db.data(), s.x_mid.data(),
                                 w.ln2_w.data(), s.ln2_mean.data(), s.ln2_rstd.data(), T, d);
  if (!c.post_ln) cpu::residual_add<float>(dmid.data(), dx.data(), T * d);

  // Attention.
  std::vector<float> dctx(T * d), dqkv(T * 3 * d, 0.0f);
  cpu::linear_backward_input<float>(dctx.data(), dmid.data(), w.dense_w.data(), T, d, d, false);
  if (full)
    cpu::linear_backward_weight<float>(gl->dense_w.data(), d, gl->dense_b.data(), dmid.data(), d,
                                       s.ctx.data(), d, T, d, d);
  for (auto [h, k] : targets)
    cpu::linear_backward_weight<float>(g.dense_cols[k].data(), hd, nullptr, dmid.data(), d,
                                       s.ctx.data() + h * hd, d, T, d, hd);
  // Without an input gradient only the target heads' Q/K/V gradients are needed.
  std::vector<uint8_t> mask;
  if (!need_input_grad && !full) {
    mask.assign(H, 0);
    for (auto [h, k] : targets) mask[h] = 1;
  }
  cpu::alibi_attention_backward<float>(dqkv.data(), dctx.data(), s.qkv.data(), slopes,
                                       mask.empty() ? nullptr : mask.data(), T, H, hd);
  if (full)
    cpu::linear_backward_weight<float>(gl->qkv_w.data(), d, gl->qkv_b.data(), dqkv.data(), 3 * d,
                                       s.a.data(), d, T, 3 * d, d);
  if (sink_heads) {
    // The sink term trains only the collapsing heads' own Q/K rows: it stops at the qkv
    // projection, so the residual stream (and the language model) is not bent towards it.
    std::vector<float> dsink(T * 3 * d, 0.0f);
    sink_loss += cpu::alibi_sink_loss_backward<float>(dsink.data(), s.qkv.data(), slopes,
                                                      sink_heads, sink_weight, T, H, hd);
    for (int64_t h = 0; h < H; ++h)
      if (sink_heads[h])
        cpu::linear_backward_weight<float>(gl->qkv_w.data() + h * 3 * hd * d, d,
                                           gl->qkv_b.data() + h * 3 * hd, dsink.data() + h * 3 * hd,
                                           3 * d, s.a.data(), d, T, 3 * hd, d);
  }
  for (auto [h, k] : targets)
    cpu::linear_backward_weight<float>(g.qkv_rows[k].data(), d, g.qkv_bias[k].data(),
                                       dqkv.data() + h * 3 * hd, 3 * d, s.a.data(), d, T, 3 * hd,
                                       d);
  if (!need_input_grad) return;
  std::vector<float> da(T * d);
  cpu::linear_backward_input<float>(da.data(), dqkv.data(), w.qkv_w.data(), T, d, 3 * d, false);
  if (c.post_ln) cpu::residual_add<float>(da.data(), dmid.data(), T * d);
  std::fill(dx.begin(), dx.end(), 0.0f);
  cpu::layernorm_backward<float>(dx.data(), full ? gl->ln1_w.data() : nullptr,
                                 full ? gl->ln1_b.data() : nullptr, da.data(), s.x_in.data(),
                                 w.ln1_w.data(), s.ln1_mean.data(), s.ln1_rstd.data(), T, d);
  if (!c.post_ln) cpu::residual_add<float>(dx.data(), dmid.data(), T * d);
}

constexpr int64_t kVocabChunk = 8192;
constexpr int64_t kKeepLogitsBytes = int64_t(1) << 30;

}  // namespace

TrainWeights TrainWeights::from_model(Model& m) {
  TrainWeights w;
  w.config = m.config();
  w.slopes = m.slopes();
  const int64_t d = w.config.hidden, V = w.config.vocab;
  w.emb.resize(V * d);
  m.for_each_vocab_chunk(kVocabChunk, [&](int64_t r0, int64_t rows, const float* E) {
    std::copy_n(E, rows * d, w.emb.data() + r0 * d);
  });
  w.emb_ln_w.assign(m.emb_ln_w(), m.emb_ln_w() + d);
  w.emb_ln_b.assign(m.emb_ln_b(), m.emb_ln_b() + d);
  w.lnf_w.assign(m.lnf_w(), m.lnf_w() + d);
  w.lnf_b.assign(m.lnf_b(), m.lnf_b() + d);
  for (int64_t l = 0; l < w.config.n_layer; ++l) {
    auto s = m.layer(l);
    w.layers.push_back({copy_of(s->ln1_w), copy_of(s->ln1_b), copy_of(s->qkv_w), copy_of(s->qkv_b),
                        copy_of(s->dense_w), copy_of(s->dense_b), copy_of(s->ln2_w),
                        copy_of(s->ln2_b), copy_of(s->fc1_w), copy_of(s->fc1_b), copy_of(s->fc2_w),
                        copy_of(s->fc2_b)});
  }
  return w;
}

std::vector<std::pair<std::string, std::vector<float>*>> TrainWeights::named() {
  std::vector<std::pair<std::string, std::vector<float>*>> out = {
      {"word_embeddings.weight", &emb},
      {"word_embeddings_layernorm.weight", &emb_ln_w},
      {"word_embeddings_layernorm.bias", &emb_ln_b}};
  for (size_t l = 0; l < layers.size(); ++l) {
    TrainLayer& L = layers[l];
    std::vector<float>* fields[kLayerTensors] = {&L.ln1_w,   &L.ln1_b,   &L.qkv_w, &L.qkv_b,
                                                 &L.dense_w, &L.dense_b, &L.ln2_w, &L.ln2_b,
                                                 &L.fc1_w,   &L.fc1_b,   &L.fc2_w, &L.fc2_b};
    for (int k = 0; k < kLayerTensors; ++k)
      out.push_back({layer_tensor_name(int64_t(l), k), fields[k]});
  }
  out.push_back({"ln_f.weight", &lnf_w});
  out.push_back({"ln_f.bias", &lnf_b});
  return out;
}

std::vector<std::pair<std::string, const std::vector<float>*>> TrainWeights::named() const {
  std::vector<std::pair<std::string, const std::vector<float>*>> out;
  for (auto& [n, p] : const_cast<TrainWeights*>(this)->named()) out.push_back({n, p});
  return out;
}

Gradients Gradients::surgical(const BloomConfig& c, std::vector<HeadRef> targets) {
  Gradients g;
  std::sort(targets.begin(), targets.end());
  g.targets = std::move(targets);
  const int64_t d = c.hidden, hd = c.head_dim();
  for (size_t k = 0; k < g.targets.size(); ++k) {
    g.qkv_rows.emplace_back(3 * hd * d, 0.0f);
    g.qkv_bias.emplace_back(3 * hd, 0.0f);
    g.dense_cols.emplace_back(d * hd, 0.0f);
  }
  return g;
}

Gradients Gradients::all(const TrainWeights& w) {
  Gradients g;
  g.full_mode = true;
  g.full = w;
  g.zero();
  return g;
}

std::vector<std::vector<float>*> Gradients::buffers() {
  std::vector<std::vector<float>*> out;
  if (full_mode)
    for (auto& [n, p] : full.named()) out.push_back(p);
  for (size_t k = 0; k < targets.size(); ++k)
    out.insert(out.end(), {&qkv_rows[k], &qkv_bias[k], &dense_cols[k]});
  return out;
}

void Gradients::zero() {
  for (auto* b : buffers()) std::fill(b->begin(), b->end(), 0.0f);
}

namespace {
F32Tensor view(const std::vector<float>& v) { return {v.data(), {}, int64_t(v.size())}; }
}  // namespace

std::shared_ptr<const LayerWeights> TrainWeightsSource::layer(int64_t l) {
  const TrainLayer& L = w_.layers[l];
  return std::make_shared<const LayerWeights>(LayerWeights{
      view(L.ln1_w), view(L.ln1_b), view(L.qkv_w), view(L.qkv_b), view(L.dense_w), view(L.dense_b),
      view(L.ln2_w), view(L.ln2_b), view(L.fc1_w), view(L.fc1_b), view(L.fc2_w), view(L.fc2_b)});
}

void TrainWeightsSource::embed(std::span<const int32_t> ids, float* out) {
  const int64_t d = w_.config.hidden;
  for (size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || ids[t] >= w_.config.vocab)
      throw Error("token id " + std::to_string(ids[t]) + " is outside the vocabulary");
    std::copy_n(w_.emb.data() + int64_t(ids[t]) * d, d, out + t * d);
  }
}

void TrainWeightsSource::for_each_vocab_chunk(
    int64_t chunk_rows, const std::function<void(int64_t, int64_t, const float*)>& fn) {
  const int64_t d = w_.config.hidden, V = w_.config.vocab;
  for (int64_t r = 0; r < V; r += chunk_rows)
    fn(r, std::min(chunk_rows, V - r), w_.emb.data() + r * d);
}

double loss_and_grad(const TrainWeights& w, const std::vector<int32_t>& ids, double weight,
                     Gradients& g, SinkTerm* sink) {
  const BloomConfig& c = w.config;
  const int64_t d = c.hidden, L = c.n_layer, V = c.vocab, T = int64_t(ids.size());
  const float eps = float(c.ln_eps);
  if (T < 2) return 0.0;
  const bool full = g.full_mode;
  std::vector<LayerTargets> per_layer(L);
  int64_t l0 = full ? 0 : L;
  for (size_t k = 0; k < g.targets.size(); ++k) {
    per_layer[g.targets[k].layer].push_back({g.targets[k].head, k});
    l0 = std::min<int64_t>(l0, g.targets[k].layer);
  }

  // Forward, keeping activations of the layers the backward will visit.
  std::vector<float> emb_in(T * d), x(T * d), emb_mean(T), emb_rstd(T);
  for (int64_t t = 0; t < T; ++t)
    std::copy_n(w.emb.data() + int64_t(ids[t]) * d, d, &emb_in[t * d]);
  cpu::layernorm_forward<float>(x.data(), emb_mean.data(), emb_rstd.data(), emb_in.data(),
                                w.emb_ln_w.data(), w.emb_ln_b.data(), T, d, eps);
  std::vector<LayerActs> acts(std::max<int64_t>(L - l0, 1));
  for (int64_t l = 0; l < L; ++l)
    block_forward(x, w.layers[l], c, w.slopes.data(), T, acts[std::max<int64_t>(l - l0, 0)]);
  std::vector<float> xf(T * d), f_mean(T), f_rstd(T);
  cpu::layernorm_forward<float>(xf.data(), f_mean.data(), f_rstd.data(), x.data(), w.lnf_w.data(),
                                w.lnf_b.data(), T, d, eps);

  // Tied lm_head + cross-entropy over vocabulary chunks: pass 1 for the log-sum-exp, pass 2
  // for the gradient. Pass 1's logits are kept for pass 2 when they fit in kKeepLogitsBytes
  // (the lm_head is most of a surgical step's FLOPs; recomputing them costs a fifth of it);
  // otherwise pass 2 recomputes them chunk by chunk and T x V floats never exist at once.
  const bool keep = T * V * int64_t(sizeof(float)) <= kKeepLogitsBytes;
  std::vector<float> run_max(T, -INFINITY), lse(T), target_logit(T, 0.0f), chunk;
  std::vector<float> kept(keep ? T * V : 0);
  std::vector<double> run_sum(T, 0.0);
  auto chunk_logits = [&](int64_t v0, int64_t n, bool compute) {
    float* out = keep ? kept.data() + T * v0 : (chunk.resize(T * n), chunk.data());
    if (compute)
      cpu::linear_forward<float>(out, xf.data(), w.emb.data() + v0 * d, nullptr, T, d, n);
    return out;
  };
  for (int64_t v0 = 0; v0 < V; v0 += kVocabChunk) {
    const int64_t n = std::min(kVocabChunk, V - v0);
    const float* logits = chunk_logits(v0, n, true);
    cpu::logsumexp_update(logits, T, n, run_max.data(), run_sum.data());
    for (int64_t t = 0; t + 1 < T; ++t)
      if (ids[t + 1] >= v0 && ids[t + 1] < v0 + n)
        target_logit[t] = logits[t * n + ids[t + 1] - v0];
  }
  double loss = 0;
  std::vector<int32_t> target(T, -1);
  std::vector<float> scale(T, float(weight));
  for (int64_t t = 0; t < T; ++t) {
    lse[t] = float(double(run_max[t]) + std::log(run_sum[t]));
    if (t + 1 < T) {
      target[t] = ids[t + 1];
      loss += weight * (double(lse[t]) - double(target_logit[t]));
    }
  }
  std::vector<float> dxf(T * d, 0.0f);
  for (int64_t v0 = 0; v0 < V; v0 += kVocabChunk) {
    const int64_t n = std::min(kVocabChunk, V - v0);
    const float* E = w.emb.data() + v0 * d;
    float* logits = chunk_logits(v0, n, !keep);
    // In place: the gradient of each logit replaces it.
    cpu::cross_entropy_backward<float>(logits, logits, lse.data(), target.data(), scale.data(), T,
                                       n, v0);
    cpu::linear_backward_input<float>(dxf.data(), logits, E, T, d, n, true);
    if (full)
      cpu::linear_backward_weight<float>(g.full.emb.data() + v0 * d, d, nullptr, logits, n,
                                         xf.data(), d, T, n, d);
  }
  std::vector<float> dx(T * d, 0.0f);
  cpu::layernorm_backward<float>(dx.data(), full ? g.full.lnf_w.data() : nullptr,
                                 full ? g.full.lnf_b.data() : nullptr, dxf.data(), x.data(),
                                 w.lnf_w.data(), f_mean.data(), f_rstd.data(), T, d);

  if (sink && !full) throw Error("the attention-sink term needs full gradients");
  double sink_loss = 0;
  const float sink_weight = sink ? float(weight * sink->strength) : 0.0f;
  for (int64_t l = L - 1; l >= l0; --l) {
    const uint8_t* sink_heads = nullptr;
    if (sink && std::any_of(&sink->heads[l * c.n_head], &sink->heads[(l + 1) * c.n_head],
                            [](uint8_t v) { return v != 0; }))
      sink_heads = &sink->heads[l * c.n_head];
    block_backward(dx, w.layers[l], c, w.slopes.data(), T, acts[l - l0], l > l0 || full,
                   full ? &g.full.layers[l] : nullptr, per_layer[l], g, sink_heads, sink_weight,
                   sink_loss);
  }
  if (sink) {
    sink->loss = sink_loss;
    loss += sink_loss;
  }
  if (!full) return loss;
  std::vector<float> demb(T * d, 0.0f);
  cpu::layernorm_backward<float>(demb.data(), g.full.emb_ln_w.data(), g.full.emb_ln_b.data(),
                                 dx.data(), emb_in.data(), w.emb_ln_w.data(), emb_mean.data(),
                                 emb_rstd.data(), T, d);
  for (int64_t t = 0; t < T; ++t)
    cpu::residual_add<float>(g.full.emb.data() + int64_t(ids[t]) * d, &demb[t * d], d);
  return loss;
}

double batch_loss_and_grad(const TrainWeights& w,
                           const std::vector<const std::vector<int32_t>*>& seqs, double weight,
                           std::vector<Gradients>& scratch, SinkTerm* sink) {
  const int threads = int(scratch.size());
  std::vector<double> loss(threads, 0.0), aux(threads, 0.0);
  std::vector<SinkTerm> sinks(sink ? threads : 0, sink ? *sink : SinkTerm{});
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num();
    scratch[t].zero();
    for (size_t i = size_t(t); i < seqs.size(); i += size_t(threads)) {
      loss[t] += loss_and_grad(w, *seqs[i], weight, scratch[t], sink ? &sinks[t] : nullptr);
      if (sink) aux[t] += sinks[t].loss;
    }
  }
  auto g0 = scratch[0].buffers();
  for (int t = 1; t < threads; ++t) {
    auto gt = scratch[t].buffers();
    for (size_t k = 0; k < g0.size(); ++k)
      for (size_t i = 0; i < g0[k]->size(); ++i) (*g0[k])[i] += (*gt[k])[i];
  }
  double total = 0, total_aux = 0;
  for (int t = 0; t < threads; ++t) {
    total += loss[t];
    total_aux += aux[t];
  }
  if (sink) sink->loss = total_aux;
  return total;
}

}  // namespace hs
