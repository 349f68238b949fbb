#include "eval/dormancy.h"

#include <cmath>

#include "util/interrupt.h"

namespace hs {

std::vector<LayerDormancy> mlp_dormancy(WeightSource& w, double threshold) {
  const int64_t d = w.config().hidden, F = w.config().ffn;
  std::vector<LayerDormancy> out;
  for (int64_t l = 0; l < w.config().n_layer; ++l) {
    check_interrupted();
    const auto lw = w.layer(l);
    const float* up = (*lw)[LayerRole::ffn_up];      // [F, d]
    const float* down = (*lw)[LayerRole::ffn_down];  // [d, F]
    std::vector<double> down_sq(F, 0.0);
    for (int64_t o = 0; o < d; ++o)
      for (int64_t i = 0; i < F; ++i) down_sq[i] += double(down[o * F + i]) * down[o * F + i];
    LayerDormancy r{F, 0};
    for (int64_t i = 0; i < F; ++i) {
      double up_sq = 0;
      for (int64_t k = 0; k < d; ++k) up_sq += double(up[i * d + k]) * up[i * d + k];
      r.dormant += std::sqrt(up_sq) * std::sqrt(down_sq[i]) < threshold;
    }
    out.push_back(r);
  }
  return out;
}

}  // namespace hs
