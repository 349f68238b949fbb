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
    const int64_t r0 = t.head * 3 * hd;
    s.qkv_rows.emplace_back(L.qkv_w.begin() + r0 * d, L.qkv_w.begin() + (r0 + 3 * hd) * d);
    s.qkv_bias.emplace_back(L.qkv_b.begin() + r0, L.qkv_b.begin() + r0 + 3 * hd);
    std::vector<float> cols(d * hd);
    for (int64_t o = 0; o < d; ++o)
      std::copy_n(L.dense_w.data() + o * d + t.head * hd, hd, cols.data() + o * hd);
    s.dense_cols.push_back(std::move(cols));
  }
  return s;
}

void TargetSlices::scatter(TrainWeights& w) const {
  const int64_t d = w.config.hidden, hd = w.config.head_dim();
  for (size_t k = 0; k < targets.size(); ++k) {
    TrainLayer& L = w.layers[targets[k].layer];
    const int64_t r0 = targets[k].head * 3 * hd;
    std::copy(qkv_rows[k].begin(), qkv_rows[k].end(), L.qkv_w.begin() + r0 * d);
    std::copy(qkv_bias[k].begin(), qkv_bias[k].end(), L.qkv_b.begin() + r0);
    for (int64_t o = 0; o < d; ++o)
      std::copy_n(dense_cols[k].data() + o * hd, hd,
                  L.dense_w.data() + o * d + targets[k].head * hd);
  }
}

std::vector<std::vector<float>*> TargetSlices::buffers() {
  std::vector<std::vector<float>*> out;
  for (size_t k = 0; k < targets.size(); ++k)
    out.insert(out.end(), {&qkv_rows[k], &qkv_bias[k], &dense_cols[k]});
  return out;
}

void reinitialize(TrainWeights& w, const std::vector<HeadRef>& targets, InitKind kind,
                  uint64_t seed) {
  const int64_t d = w.config.hidden, hd = w.config.head_dim();
  const double fan_in = double(d), fan_out = double(3 * hd);
  Rng rng(seed);
  for (const HeadRef& t : targets) {
    TrainLayer& L = w.layers[t.layer];
    const int64_t r0 = t.head * 3 * hd;
    float* rows = L.qkv_w.data() + r0 * d;
    const int64_t n = 3 * hd * d;
    if (kind == InitKind::XavierNormal) {
      rng.fill_normal(rows, n, std::sqrt(2.0 / (fan_in + fan_out)));
    } else {
      const double bound = std::sqrt(6.0 / (fan_in + fan_out));
      for (int64_t i = 0; i < n; ++i) rows[i] = float((2 * rng.uniform01() - 1) * bound);
    }
    std::fill_n(L.qkv_b.data() + r0, 3 * hd, 0.0f);
    for (int64_t o = 0; o < d; ++o) std::fill_n(L.dense_w.data() + o * d + t.head * hd, hd, 0.0f);
  }
}

}  // namespace hs
