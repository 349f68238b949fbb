#include "engine/cpu/train.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <exception>

#include "engine/cpu/block.h"
#include "ops/cpu/ops.h"
#include "util/error.h"
#include "util/interrupt.h"

namespace hs {

namespace {

// Fixed-size views of a layer's weights (for the shared block) and of its gradients.
LayerWeights view(const TrainLayer& L) {
  LayerWeights w;
  for (int r = 0; r < kLayerRoles; ++r)
    if (!L.t[r].empty()) w.t[r] = {L.t[r].data(), {}, int64_t(L.t[r].size())};
  return w;
}

LayerGrads grads_of(TrainLayer* G) {
  LayerGrads g;
  if (G)
    for (int r = 0; r < kLayerRoles; ++r)
      if (!G->t[r].empty()) g.t[r] = G->t[r].data();
  return g;
}

std::vector<float> permute_qkv(const ModelConfig& c, LayerRole r, const std::vector<float>& src,
                               bool to_file) {
  if (!role_permuted(c, r)) return src;
  std::vector<float> out(src.size());
  const int64_t rows = 3 * c.hidden, cols = int64_t(src.size()) / rows;
  qkv_copy_rows(c.qkv_layout, to_file, reinterpret_cast<const std::byte*>(src.data()),
                reinterpret_cast<std::byte*>(out.data()), 0, rows, size_t(cols) * sizeof(float),
                c.n_head, c.head_dim());
  return out;
}

// Pass 1's logits are kept for pass 2 of the cross-entropy when they fit in this many bytes
// (the lm_head is most of a surgical step's FLOPs; recomputing them costs a fifth of it).
constexpr int64_t kKeepLogitsBytes = int64_t(1) << 30;

}  // namespace

std::vector<float> to_file_layout(const ModelConfig& c, LayerRole r,
                                  const std::vector<float>& internal) {
  return permute_qkv(c, r, internal, true);
}

std::vector<float> from_file_layout(const ModelConfig& c, LayerRole r,
                                    const std::vector<float>& file) {
  return permute_qkv(c, r, file, false);
}

TrainWeights TrainWeights::zeros(const ModelConfig& c) {
  TrainWeights w;
  w.config = c;
  w.layers.resize(c.n_layer);
  for (int r = 0; r < kModelRoles; ++r)
    if (role_present(c, ModelRole(r))) w.model[r].assign(role_numel(c, ModelRole(r)), 0.0f);
  for (TrainLayer& L : w.layers)
    for (int r = 0; r < kLayerRoles; ++r)
      if (role_present(c, LayerRole(r))) L.t[r].assign(role_numel(c, LayerRole(r)), 0.0f);
  return w;
}

TrainWeights TrainWeights::from_model(Model& m) {
  TrainWeights w;
  w.config = m.config();
  w.slopes = m.slopes();
  const ModelConfig& c = w.config;
  const int64_t d = c.hidden;
  w[ModelRole::tok_emb].resize(c.vocab * d);
  // The token embedding streams in through the head's chunks when tied; else row by row.
  if (c.tied_head) {
    m.for_each_vocab_chunk(kVocabChunk, [&](int64_t r0, int64_t rows, const float* E) {
      std::copy_n(E, rows * d, w[ModelRole::tok_emb].data() + r0 * d);
    });
  } else {
    w[ModelRole::lm_head].resize(c.vocab * d);
    m.for_each_vocab_chunk(kVocabChunk, [&](int64_t r0, int64_t rows, const float* E) {
      std::copy_n(E, rows * d, w[ModelRole::lm_head].data() + r0 * d);
    });
    m.checkpoint().read_rows(ModelRole::tok_emb, DType::F32, 0, c.vocab,
                             w[ModelRole::tok_emb].data());
  }
  for (ModelRole r :
       {ModelRole::emb_norm, ModelRole::emb_norm_b, ModelRole::out_norm, ModelRole::out_norm_b})
    if (const float* p = m.norm(r)) w[r].assign(p, p + d);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    auto s = m.layer(l);
    TrainLayer& L = w.layers.emplace_back();
    for (int r = 0; r < kLayerRoles; ++r)
      if (s->t[r].data) L.t[r].assign(s->t[r].data, s->t[r].data + s->t[r].numel);
  }
  return w;
}

std::vector<TrainWeights::Param> TrainWeights::params() {
  std::vector<Param> out;
  for (const TensorRef& t : model_tensors(config)) {
    std::vector<float>& buf =
        t.per_layer ? layers[t.layer][t.layer_role] : model[int(t.model_role)];
    if (buf.empty()) continue;  // (from_model/zeros fill every present role)
    out.push_back({t,
                   t.per_layer ? tensor_name(config, t.layer_role, t.layer)
                               : tensor_name(config, t.model_role),
                   role_shape(config, t), role_is_matrix(t), &buf});
  }
  return out;
}

std::vector<TrainWeights::Param> TrainWeights::params() const {
  return const_cast<TrainWeights*>(this)->params();
}

TargetSlices gather_slices(const TrainWeights& w, std::vector<HeadRef> targets) {
  TargetSlices s = TargetSlices::zeros(w.config, std::move(targets));
  const int64_t d = s.hidden, hd = s.head_dim;
  for (size_t k = 0; k < s.targets.size(); ++k) {
    const TrainLayer& L = w.layers[s.targets[k].layer];
    const int64_t r0 = qkv_row(s.targets[k].head, 0, hd);
    std::copy_n(L[LayerRole::wqkv].begin() + r0 * d, 3 * hd * d, s.qkv_rows[k].begin());
    if (!s.qkv_bias[k].empty())
      std::copy_n(L[LayerRole::bqkv].begin() + r0, 3 * hd, s.qkv_bias[k].begin());
    for (int64_t o = 0; o < d; ++o)
      std::copy_n(L[LayerRole::wo].data() + o * d + s.targets[k].head * hd, hd,
                  s.dense_cols[k].data() + o * hd);
  }
  return s;
}

void scatter_slices(const TargetSlices& s, TrainWeights& w) {
  const int64_t d = s.hidden, hd = s.head_dim;
  for (size_t k = 0; k < s.targets.size(); ++k) {
    TrainLayer& L = w.layers[s.targets[k].layer];
    const int64_t r0 = qkv_row(s.targets[k].head, 0, hd);
    std::copy(s.qkv_rows[k].begin(), s.qkv_rows[k].end(), L[LayerRole::wqkv].begin() + r0 * d);
    std::copy(s.qkv_bias[k].begin(), s.qkv_bias[k].end(), L[LayerRole::bqkv].begin() + r0);
    for (int64_t o = 0; o < d; ++o)
      std::copy_n(s.dense_cols[k].data() + o * hd, hd,
                  L[LayerRole::wo].data() + o * d + s.targets[k].head * hd);
  }
}

Gradients Gradients::surgical(const ModelConfig& c, std::vector<HeadRef> targets) {
  Gradients g;
  g.slices = TargetSlices::zeros(c, std::move(targets));
  return g;
}

Gradients Gradients::all(const TrainWeights& w) {
  Gradients g;
  g.full_mode = true;
  g.full = TrainWeights::zeros(w.config);
  return g;
}

std::vector<std::vector<float>*> Gradients::buffers() {
  std::vector<std::vector<float>*> out;
  if (full_mode)
    for (auto& p : full.params()) out.push_back(p.buf);
  for (auto* b : slices.buffers()) out.push_back(b);
  return out;
}

void Gradients::zero() {
  for (auto* b : buffers()) std::fill(b->begin(), b->end(), 0.0f);
}

std::shared_ptr<const LayerWeights> TrainWeightsSource::layer(int64_t l) {
  return std::make_shared<const LayerWeights>(view(w_.layers[l]));
}

const float* TrainWeightsSource::norm(ModelRole r) const {
  return w_[r].empty() ? nullptr : w_[r].data();
}

void TrainWeightsSource::embed(std::span<const int32_t> ids, float* out) {
  const int64_t d = w_.config.hidden;
  for (size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || ids[t] >= w_.config.vocab)
      throw Error("token id " + std::to_string(ids[t]) + " is outside the vocabulary");
    std::copy_n(w_[ModelRole::tok_emb].data() + int64_t(ids[t]) * d, d, out + t * d);
  }
}

void TrainWeightsSource::for_each_vocab_chunk(
    int64_t chunk_rows, const std::function<void(int64_t, int64_t, const float*)>& fn) {
  const ModelConfig& c = w_.config;
  const auto& head = w_[c.tied_head ? ModelRole::tok_emb : ModelRole::lm_head];
  for_each_row_chunk(head.data(), c.vocab, c.hidden, chunk_rows, fn);
}

double loss_and_grad(const TrainWeights& w, const std::vector<int32_t>& ids, double weight,
                     Gradients& g, SinkTerm* sink) {
  const ModelConfig& c = w.config;
  const int64_t d = c.hidden, L = c.n_layer, V = c.vocab, T = int64_t(ids.size());
  const float eps = float(c.ln_eps);
  if (T < 2) return 0.0;
  const bool full = g.full_mode;
  if (sink && !full) throw Error("the attention-sink term needs full gradients");
  std::vector<std::vector<HeadSliceGrads>> slices(L);
  int64_t l0 = full ? 0 : L;
  TargetSlices& gs = g.slices;
  for (size_t k = 0; k < gs.targets.size(); ++k) {
    const HeadRef& t = gs.targets[k];
    slices[t.layer].push_back({t.head, gs.qkv_rows[k].data(),
                               gs.qkv_bias[k].empty() ? nullptr : gs.qkv_bias[k].data(),
                               gs.dense_cols[k].data()});
    l0 = std::min<int64_t>(l0, t.layer);
  }
  const std::vector<float>& E = w[c.tied_head ? ModelRole::tok_emb : ModelRole::lm_head];
  std::vector<float>* dE =
      full ? &g.full[c.tied_head ? ModelRole::tok_emb : ModelRole::lm_head] : nullptr;
  auto ptr = [](const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); };
  auto gptr = [&](ModelRole r) { return full && !g.full[r].empty() ? g.full[r].data() : nullptr; };

  // Forward, keeping activations of the layers the backward will visit.
  std::vector<float> emb_in(T * d), x(T * d), emb_mean(T), emb_rstd(T);
  for (int64_t t = 0; t < T; ++t)
    std::copy_n(w[ModelRole::tok_emb].data() + int64_t(ids[t]) * d, d, &emb_in[t * d]);
  if (c.emb_norm)
    cpu::layernorm_forward<float>(x.data(), emb_mean.data(), emb_rstd.data(), emb_in.data(),
                                  ptr(w[ModelRole::emb_norm]), ptr(w[ModelRole::emb_norm_b]), T, d,
                                  eps);
  else
    x = emb_in;
  std::vector<BlockActs> acts(std::max<int64_t>(L - l0, 1));
  const BlockSegment seg{0, T};
  for (int64_t l = 0; l < L; ++l) {
    check_interrupted();
    block_forward(x.data(), T, {&seg, 1}, c, view(w.layers[l]), w.slopes.data(),
                  acts[std::max<int64_t>(l - l0, 0)], true);
  }
  std::vector<float> xf(T * d), f_mean(T), f_rstd(T);
  cpu::layernorm_forward<float>(xf.data(), f_mean.data(), f_rstd.data(), x.data(),
                                ptr(w[ModelRole::out_norm]), ptr(w[ModelRole::out_norm_b]), T, d,
                                eps);

  // Output head + cross-entropy over vocabulary chunks: pass 1 for the log-sum-exp, pass 2
  // for the gradient. Pass 1's logits are kept for pass 2 when they fit in kKeepLogitsBytes;
  // otherwise pass 2 recomputes them chunk by chunk and T x V floats never exist at once.
  const bool keep = T * V * int64_t(sizeof(float)) <= kKeepLogitsBytes;
  std::vector<float> run_max(T, -INFINITY), lse(T), target_logit(T, 0.0f), chunk;
  std::vector<float> kept(keep ? T * V : 0);
  std::vector<double> run_sum(T, 0.0);
  auto chunk_logits = [&](int64_t v0, int64_t n, bool compute) {
    float* out = keep ? kept.data() + T * v0 : (chunk.resize(T * n), chunk.data());
    if (compute) head_logits(out, n, xf.data(), E.data() + v0 * d, T, d, n, c.logit_scale);
    return out;
  };
  for (int64_t v0 = 0; v0 < V; v0 += kVocabChunk) {
    check_interrupted();
    const int64_t n = std::min(kVocabChunk, V - v0);
    const float* logits = chunk_logits(v0, n, true);
    cpu::logsumexp_update(logits, T, n, run_max.data(), run_sum.data());
    for (int64_t t = 0; t + 1 < T; ++t)
      if (ids[t + 1] >= v0 && ids[t + 1] < v0 + n)
        target_logit[t] = logits[t * n + ids[t + 1] - v0];
  }
  double loss = 0;
  std::vector<int32_t> target(T, -1);
  // The gradient of a logit before the logit scale is the scale times its gradient after.
  std::vector<float> scale(T, float(weight * c.logit_scale));
  for (int64_t t = 0; t < T; ++t) {
    lse[t] = float(double(run_max[t]) + std::log(run_sum[t]));
    if (t + 1 < T) {
      target[t] = ids[t + 1];
      loss += weight * (double(lse[t]) - double(target_logit[t]));
    }
  }
  std::vector<float> dxf(T * d, 0.0f);
  for (int64_t v0 = 0; v0 < V; v0 += kVocabChunk) {
    check_interrupted();
    const int64_t n = std::min(kVocabChunk, V - v0);
    float* logits = chunk_logits(v0, n, !keep);
    // In place: the gradient of each (unscaled) logit replaces it.
    cpu::cross_entropy_backward<float>(logits, logits, lse.data(), target.data(), scale.data(), T,
                                       n, v0);
    cpu::linear_backward_input<float>(dxf.data(), logits, E.data() + v0 * d, T, d, n, true);
    if (dE)
      cpu::linear_backward_weight<float>(dE->data() + v0 * d, d, nullptr, logits, n, xf.data(), d,
                                         T, n, d);
  }
  std::vector<float> dx(T * d, 0.0f);
  cpu::layernorm_backward<float>(dx.data(), gptr(ModelRole::out_norm), gptr(ModelRole::out_norm_b),
                                 dxf.data(), x.data(), ptr(w[ModelRole::out_norm]), f_mean.data(),
                                 f_rstd.data(), T, d);

  double sink_loss = 0;
  const float sink_weight = sink ? float(weight * sink->strength) : 0.0f;
  for (int64_t l = L - 1; l >= l0; --l) {
    check_interrupted();
    LayerSink ls{nullptr, sink_weight, &sink_loss};
    if (sink && std::any_of(&sink->heads[l * c.n_head], &sink->heads[(l + 1) * c.n_head],
                            [](uint8_t v) { return v != 0; }))
      ls.heads = &sink->heads[l * c.n_head];
    block_backward(dx, T, c, view(w.layers[l]), w.slopes.data(), acts[l - l0], l > l0 || full,
                   grads_of(full ? &g.full.layers[l] : nullptr), slices[l],
                   ls.heads ? &ls : nullptr);
  }
  if (sink) {
    sink->loss = sink_loss;
    loss += sink_loss;
  }
  if (!full) return loss;
  std::vector<float> demb(T * d, 0.0f);
  if (c.emb_norm)
    cpu::layernorm_backward<float>(
        demb.data(), gptr(ModelRole::emb_norm), gptr(ModelRole::emb_norm_b), dx.data(),
        emb_in.data(), ptr(w[ModelRole::emb_norm]), emb_mean.data(), emb_rstd.data(), T, d);
  else
    demb = dx;
  for (int64_t t = 0; t < T; ++t)
    cpu::residual_add<float>(g.full[ModelRole::tok_emb].data() + int64_t(ids[t]) * d, &demb[t * d],
                             d);
  return loss;
}

double batch_loss_and_grad(const TrainWeights& w,
                           const std::vector<const std::vector<int32_t>*>& seqs, double weight,
                           std::vector<Gradients>& scratch, SinkTerm* sink) {
  const int threads = int(scratch.size());
  std::vector<double> loss(threads, 0.0), aux(threads, 0.0);
  std::vector<SinkTerm> sinks(sink ? threads : 0, sink ? *sink : SinkTerm{});
  // An exception (Ctrl-C's Interrupted among them) must not leave the parallel region: each
  // thread keeps its own, the first is rethrown after it and the partial gradients discarded.
  std::vector<std::exception_ptr> failed(threads);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num();
    try {
      scratch[t].zero();
      for (size_t i = size_t(t); i < seqs.size(); i += size_t(threads)) {
        check_interrupted();
        loss[t] += loss_and_grad(w, *seqs[i], weight, scratch[t], sink ? &sinks[t] : nullptr);
        if (sink) aux[t] += sinks[t].loss;
      }
    } catch (...) {
      failed[t] = std::current_exception();
    }
  }
  for (const auto& e : failed)
    if (e) std::rethrow_exception(e);
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
