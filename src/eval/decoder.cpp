#include "eval/decoder.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "ops/cpu/ops.h"
#include "util/error.h"

namespace hs {

namespace {

// Vocabulary rows per lm_head chunk, as in the full forward pass.
constexpr int64_t kVocabChunk = 8192;

// out[R, OC] (row stride ldo) = inp[R, IC] @ W[OC, IC]^T (+ bias). OpenBLAS's sgemm packs W on
// every call, which for one or two rows costs more than the product: sgemv reads W once per row
// (one row through a 4096 x 1024 matrix, 1 thread: 0.45-0.7 ms against 2.3-2.8 ms; from 3 rows
// on sgemm is as fast or faster).
void linear_rows(float* out, int64_t ldo, const float* inp, const float* W, const float* bias,
                 int64_t R, int64_t IC, int64_t OC) {
  if (R > 2) {
    if (bias)
      for (int64_t r = 0; r < R; ++r) std::copy_n(bias, OC, out + r * ldo);
    cpu::gemm<float>(false, true, R, OC, IC, 1.0f, inp, IC, W, IC, bias ? 1.0f : 0.0f, out, ldo);
    return;
  }
  for (int64_t r = 0; r < R; ++r) {
    if (bias) std::copy_n(bias, OC, out + r * ldo);
    cblas_sgemv(CblasRowMajor, CblasNoTrans, int(OC), int(IC), 1.0f, W, int(IC), inp + r * IC, 1,
                bias ? 1.0f : 0.0f, out + r * ldo, 1);
  }
}

}  // namespace

Decoder::Decoder(WeightSource& model, int64_t batch, int64_t capacity)
    : model_(model), batch_(batch), cap_(capacity), len_(batch, 0) {
  const BloomConfig& c = model.config();
  // Uninitialised: only the positions written are ever read, and untouched pages cost nothing.
  kv_ =
      std::make_unique_for_overwrite<float[]>(size_t(2 * c.n_layer * batch * capacity * c.hidden));
}

float* Decoder::cache(int64_t kv, int64_t l, int64_t b, int64_t h) const {
  const BloomConfig& c = model_.config();
  return kv_.get() + (((kv * c.n_layer + l) * batch_ + b) * c.n_head + h) * cap_ * c.head_dim();
}

void Decoder::fork(int64_t from, int64_t to) {
  const BloomConfig& c = model_.config();
  const int64_t n = len_[from] * c.head_dim();
  for (int64_t kv = 0; kv < 2; ++kv)
    for (int64_t l = 0; l < c.n_layer; ++l)
      for (int64_t h = 0; h < c.n_head; ++h)
        std::copy_n(cache(kv, l, from, h), n, cache(kv, l, to, h));
  len_[to] = len_[from];
}

const std::vector<float>& Decoder::extend(std::span<const Feed> feeds) {
  const BloomConfig& c = model_.config();
  const int64_t d = c.hidden, H = c.n_head, hd = c.head_dim(), V = c.vocab, L = c.n_layer;
  const int64_t F = int64_t(feeds.size());
  const float eps = float(c.ln_eps);

  // Row r of this pass is token row_pos[r] of sequence row_seq[r].
  std::vector<int64_t> row_seq, row_pos, last_row(F);
  check_feeds(feeds, len_, cap_, V);
  for (int64_t f = 0; f < F; ++f) {
    const Feed& fd = feeds[f];
    for (size_t i = 0; i < fd.ids.size(); ++i) {
      row_seq.push_back(fd.seq);
      row_pos.push_back(len_[fd.seq] + int64_t(i));
    }
    last_row[f] = int64_t(row_seq.size()) - 1;
  }
  const int64_t R = int64_t(row_seq.size());
  int64_t attn_work = 0;  // multiply-adds of the attention, per layer
  for (int64_t r = 0; r < R; ++r) attn_work += 2 * (row_pos[r] + 1) * d;

  x_.resize(R * d);
  a_.resize(R * d);
  qkv_.resize(R * 3 * d);
  ctx_.resize(R * d);
  attn_out_.resize(R * d);
  b_.resize(R * d);
  h_.resize(R * 4 * d);
  for (int64_t f = 0, r = 0; f < F; r += int64_t(feeds[f].ids.size()), ++f)
    model_.embed(feeds[f].ids, x_.data() + r * d);
  cpu::layernorm_forward<float>(x_.data(), nullptr, nullptr, x_.data(), model_.emb_ln_w(),
                                model_.emb_ln_b(), R, d, eps);

  const float* slopes = model_.slopes().data();
  const float scale = 1.0f / std::sqrt(float(hd));
  for (int64_t l = 0; l < L; ++l) {
    auto wp = model_.layer(l);
    const LayerWeights& w = *wp;
    cpu::layernorm_forward<float>(a_.data(), nullptr, nullptr, x_.data(), w.ln1_w.data,
                                  w.ln1_b.data, R, d, eps);
    linear_rows(qkv_.data(), 3 * d, a_.data(), w.qkv_w.data, w.qkv_b.data, R, d, 3 * d);
    // Every new key and value goes into the cache first: later rows of a feed attend to earlier
    // ones of the same feed.
    for (int64_t r = 0; r < R; ++r)
      for (int64_t h = 0; h < H; ++h) {
        const float* src = qkv_.data() + r * 3 * d + h * 3 * hd;
        std::copy_n(src + hd, hd, cache(0, l, row_seq[r], h) + row_pos[r] * hd);
        std::copy_n(src + 2 * hd, hd, cache(1, l, row_seq[r], h) + row_pos[r] * hd);
      }
      // One query row against its sequence's cache: the operations of alibi_attention_forward in
      // the same order, so the scores round identically. A decoding step's attention is too
      // little work to pay for waking a thread team (on a busy machine each barrier can cost a
      // scheduler tick), so only long contexts and prefills run in parallel.
#pragma omp parallel if (attn_work > (int64_t(1) << 20))
    {
      std::vector<float> p(cap_);
#pragma omp for collapse(2) schedule(dynamic, 4)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t h = 0; h < H; ++h) {
          const int64_t t = row_pos[r];
          const float* q = qkv_.data() + r * 3 * d + h * 3 * hd;
          const float* K = cache(0, l, row_seq[r], h);
          const float* Vc = cache(1, l, row_seq[r], h);
          float mx = -INFINITY;
          for (int64_t j = 0; j <= t; ++j) {
            float dot = 0;
            for (int64_t i = 0; i < hd; ++i) dot += q[i] * K[j * hd + i];
            p[j] = dot * scale + slopes[h] * float(j);
            mx = std::max(mx, p[j]);
          }
          float sum = 0;
          for (int64_t j = 0; j <= t; ++j) {
            p[j] = std::exp(p[j] - mx);
            sum += p[j];
          }
          const float inv = 1.0f / sum;
          for (int64_t j = 0; j <= t; ++j) p[j] *= inv;
          float* out = ctx_.data() + r * d + h * hd;
          std::fill(out, out + hd, 0.0f);
          for (int64_t j = 0; j <= t; ++j)
            for (int64_t i = 0; i < hd; ++i) out[i] += p[j] * Vc[j * hd + i];
        }
    }
    linear_rows(attn_out_.data(), d, ctx_.data(), w.dense_w.data, w.dense_b.data, R, d, d);
    if (c.post_ln) std::copy_n(a_.data(), R * d, x_.data());
    cpu::residual_add<float>(x_.data(), attn_out_.data(), R * d);
    cpu::layernorm_forward<float>(b_.data(), nullptr, nullptr, x_.data(), w.ln2_w.data,
                                  w.ln2_b.data, R, d, eps);
    linear_rows(h_.data(), 4 * d, b_.data(), w.fc1_w.data, w.fc1_b.data, R, d, 4 * d);
    cpu::gelu_forward<float>(h_.data(), h_.data(), R * 4 * d);
    linear_rows(attn_out_.data(), d, h_.data(), w.fc2_w.data, w.fc2_b.data, R, 4 * d, d);
    if (c.post_ln) std::copy_n(b_.data(), R * d, x_.data());
    cpu::residual_add<float>(x_.data(), attn_out_.data(), R * d);
  }
  for (const Feed& fd : feeds) len_[fd.seq] += int64_t(fd.ids.size());

  // Only each feed's last position needs logits.
  last_.resize(F * d);
  for (int64_t f = 0; f < F; ++f) std::copy_n(x_.data() + last_row[f] * d, d, last_.data() + f * d);
  cpu::layernorm_forward<float>(last_.data(), nullptr, nullptr, last_.data(), model_.lnf_w(),
                                model_.lnf_b(), F, d, eps);
  logits_.resize(F * V);
  model_.for_each_vocab_chunk(kVocabChunk, [&](int64_t r0, int64_t rows, const float* E) {
    linear_rows(logits_.data() + r0, V, last_.data(), E, nullptr, F, d, rows);
  });
  return logits_;
}

}  // namespace hs
