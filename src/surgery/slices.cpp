#include "surgery/slices.h"

#include <algorithm>
#include <cmath>

#include "util/random.h"

namespace hs {

TargetSlices TargetSlices::gather(const TrainWeights& w, std::vector<HeadRef> targets) {
  std::sort(targets.begin(), targets.end());
  TargetSlices s;
  s.targets = std::move(targets);
  const int64_t d = w.config.hidden, hd = w.config.head_dim();
  for (const HeadRef& t : s.targets) {
    const TrainLayer& L = w.layers[t.layer];
    const int64_t r0 = qkv_row(t.head, 0, hd);
    const auto& qkv = L[LayerRole::wqkv];
    s.qkv_rows.emplace_back(qkv.begin() + r0 * d, qkv.begin() + (r0 + 3 * hd) * d);
    const auto& b = L[LayerRole::bqkv];
    s.qkv_bias.emplace_back(b.empty() ? b.end() : b.begin() + r0,
                            b.empty() ? b.end() : b.begin() + r0 + 3 * hd);
    std::vector<float> cols(d * hd);
    for (int64_t o = 0; o < d; ++o)
      std::copy_n(L[LayerRole::wo].data() + o * d + t.head * hd, hd, cols.data() + o * hd);
    s.dense_cols.push_back(std::move(cols));
  }
  return s;
}

void TargetSlices::scatter(TrainWeights& w) const {
  const int64_t d = w.config.hidden, hd = w.config.head_dim();
  for (size_t k = 0; k < targets.size(); ++k) {
    TrainLayer& L = w.layers[targets[k].layer];
    const int64_t r0 = qkv_row(targets[k].head, 0, hd);
    std::copy(qkv_rows[k].begin(), qkv_rows[k].end(), L[LayerRole::wqkv].begin() + r0 * d);
    std::copy(qkv_bias[k].begin(), qkv_bias[k].end(), L[LayerRole::bqkv].begin() + r0);
    for (int64_t o = 0; o < d; ++o)
      std::copy_n(dense_cols[k].data() + o * hd, hd,
                  L[LayerRole::wo].data() + o * d + targets[k].head * hd);
  }
}

std::vector<std::vector<float>*> TargetSlices::buffers() {
  std::vector<std::vector<float>*> out;
  for (size_t k = 0; k < targets.size(); ++k) {
    out.push_back(&qkv_rows[k]);
    if (!qkv_bias[k].empty()) out.push_back(&qkv_bias[k]);
    out.push_back(&dense_cols[k]);
  }
  return out;
}

void reinitialize(TrainWeights& w, const std::vector<HeadRef>& targets, InitKind kind,
                  uint64_t seed) {
  const int64_t d = w.config.hidden, hd = w.config.head_dim();
  const double fan_in = double(d), fan_out = double(3 * hd);
  Rng rng(seed);
  for (const HeadRef& t : targets) {
    TrainLayer& L = w.layers[t.layer];
    const int64_t r0 = qkv_row(t.head, 0, hd);
    float* rows = L[LayerRole::wqkv].data() + r0 * d;
    const int64_t n = 3 * hd * d;
    if (kind == InitKind::XavierNormal) {
      rng.fill_normal(rows, n, std::sqrt(2.0 / (fan_in + fan_out)));
    } else {
      const double bound = std::sqrt(6.0 / (fan_in + fan_out));
      for (int64_t i = 0; i < n; ++i) rows[i] = float((2 * rng.uniform01() - 1) * bound);
    }
    if (!L[LayerRole::bqkv].empty()) std::fill_n(L[LayerRole::bqkv].data() + r0, 3 * hd, 0.0f);
    for (int64_t o = 0; o < d; ++o)
      std::fill_n(L[LayerRole::wo].data() + o * d + t.head * hd, hd, 0.0f);
  }
}

}  // namespace hs
