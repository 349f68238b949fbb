#include "engine/cpu/decoder.h"

#include <algorithm>
#include <string>

#include "engine/cpu/forward.h"
#include "ops/cpu/ops.h"
#include "util/interrupt.h"

namespace hs {

Decoder::Decoder(WeightSource& model, int64_t batch, int64_t capacity)
    : model_(model), batch_(batch), cap_(capacity), len_(batch, 0) {
  const ModelConfig& c = model.config();
  // Uninitialised: only the positions written are ever read, and untouched pages cost nothing.
  kv_ =
      std::make_unique_for_overwrite<float[]>(size_t(2 * c.n_layer * batch * capacity * c.hidden));
}

float* Decoder::cache(int64_t kv, int64_t l, int64_t b) const {
  const ModelConfig& c = model_.config();
  return kv_.get() + ((kv * c.n_layer + l) * batch_ + b) * cap_ * c.hidden;
}

void Decoder::fork(int64_t from, int64_t to) {
  const ModelConfig& c = model_.config();
  const int64_t hd = c.head_dim(), n = len_[from] * hd;
  for (int64_t kv = 0; kv < 2; ++kv)
    for (int64_t l = 0; l < c.n_layer; ++l)
      for (int64_t h = 0; h < c.n_head; ++h)
        std::copy_n(cache(kv, l, from) + h * cap_ * hd, n, cache(kv, l, to) + h * cap_ * hd);
  len_[to] = len_[from];
}

const std::vector<float>& Decoder::extend(std::span<const Feed> feeds) {
  const ModelConfig& c = model_.config();
  const int64_t d = c.hidden, V = c.vocab, L = c.n_layer;
  const int64_t F = int64_t(feeds.size());
  check_feeds(feeds, len_, cap_, V);

  // One segment per feed: its rows of this pass, after the len_ tokens already cached.
  std::vector<BlockSegment> segs(F);
  int64_t R = 0;
  for (int64_t f = 0; f < F; ++f) {
    segs[f].row0 = R;
    segs[f].rows = int64_t(feeds[f].ids.size());
    segs[f].past = len_[feeds[f].seq];
    segs[f].cap = cap_;
    R += segs[f].rows;
  }
  x_.resize(R * d);
  for (int64_t f = 0; f < F; ++f) embed_rows(model_, feeds[f].ids, x_.data() + segs[f].row0 * d);
  for (int64_t l = 0; l < L; ++l) {
    check_interrupted();  // a long prompt's prefill; the cache lengths are not yet advanced
    auto w = model_.inference_layer(l);
    for (int64_t f = 0; f < F; ++f) {
      segs[f].k_cache = cache(0, l, feeds[f].seq);
      segs[f].v_cache = cache(1, l, feeds[f].seq);
    }
    block_forward(x_.data(), R, segs, c, *w, model_.slopes().data(), acts_, false);
  }
  for (const Feed& fd : feeds) len_[fd.seq] += int64_t(fd.ids.size());

  // Only each feed's last position needs logits.
  last_.resize(F * d);
  for (int64_t f = 0; f < F; ++f)
    std::copy_n(x_.data() + (segs[f].row0 + segs[f].rows - 1) * d, d, last_.data() + f * d);
  cpu::layernorm_forward<float>(last_.data(), nullptr, nullptr, last_.data(),
                                model_.norm(ModelRole::out_norm),
                                model_.norm(ModelRole::out_norm_b), F, d, float(c.ln_eps));
  logits_.resize(F * V);
  for_each_head_chunk(model_, [&](const HeadChunk& E) {
    head_logits(logits_.data() + E.r0, V, last_.data(), E, F, d, c.logit_scale);
  });
  return logits_;
}

}  // namespace hs
