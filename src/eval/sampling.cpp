#include "eval/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace hs {

void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> context,
                              double penalty) {
  std::vector<int32_t> ids(context.begin(), context.end());
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  const float pen = float(penalty);
  for (int32_t id : ids) {
    if (id < 0 || size_t(id) >= logits.size()) continue;
    float& v = logits[id];
    v = v > 0 ? v / pen : v * pen;
  }
}

int32_t argmax(std::span<const float> logits) {
  return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

std::vector<Candidate> sampling_candidates(std::span<const float> logits,
                                           const SamplingOptions& o) {
  const int64_t V = int64_t(logits.size());
  // Higher logit first, ties by lower id: a strict total order, so every partial sort below
  // gives the same result whatever the algorithm.
  auto before = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  int64_t n = V;
  if (o.top_k > 0 && o.top_k < V) {
    std::nth_element(idx.begin(), idx.begin() + (o.top_k - 1), idx.end(), before);
    n = o.top_k;
    idx.resize(n);
  }
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, logits[idx[i]]);
  // Softmax of logits / temperature over the kept tokens (weights indexed by token id).
  std::vector<double> w(V, 0.0);
  double z = 0;
  for (int64_t i = 0; i < n; ++i)
    z += w[idx[i]] = std::exp((double(logits[idx[i]]) - mx) / o.temperature);

  int64_t keep = n;
  if (o.top_p < 1.0) {
    // Sort only as much of the order as the nucleus needs: blocks of doubling size, each
    // selected (nth_element) from the rest and then sorted.
    double cum = 0;
    bool done = false;
    for (int64_t sorted = 0, m = std::min<int64_t>(n, 256); !done && sorted < n;
         sorted = m, m = std::min(n, 2 * m)) {
      if (m < n) std::nth_element(idx.begin() + sorted, idx.begin() + m, idx.begin() + n, before);
      std::sort(idx.begin() + sorted, idx.begin() + m, before);
      for (int64_t i = sorted; i < m; ++i) {
        cum += w[idx[i]] / z;
        if (cum >= o.top_p) {
          keep = i + 1;
          done = true;
          break;
        }
      }
    }
  } else if (n < V) {
    std::sort(idx.begin(), idx.end(), before);
  }
  std::vector<Candidate> out(keep);
  double kept = 0;
  for (int64_t i = 0; i < keep; ++i) {
    out[i] = {idx[i], w[idx[i]]};
    kept += out[i].prob;
  }
  for (auto& c : out) c.prob /= kept;
  return out;
}

int32_t next_token(std::span<float> logits, std::span<const int32_t> context,
                   const SamplingOptions& o, Rng& rng) {
  if (o.repetition_penalty != 1.0) apply_repetition_penalty(logits, context, o.repetition_penalty);
  if (o.temperature <= 0) return argmax(logits);
  const auto cands = sampling_candidates(logits, o);
  const double u = rng.uniform01();
  double cum = 0;
  for (const Candidate& c : cands)
    if ((cum += c.prob) > u) return c.id;
  return cands.back().id;  // u beyond the rounded total
}

}  // namespace hs
