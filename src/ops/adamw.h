// AdamW's element update with torch.optim.AdamW's exact semantics, for host and device code
// (docs/numerics.md §3): the step's scalars are computed once in double, as PyTorch computes
// them from Python floats, and each element is updated in fp32.
#pragma once

#include <cmath>
#include <cstdint>

#include "util/hd.h"

namespace hs {

struct AdamWConfig {
  double lr = 5e-5, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

// The scalars of optimizer step t (1-based) at learning rate lr.
struct AdamWStep {
  float step_size, bc2_sqrt, decay, b1, b2, eps;
};
inline AdamWStep adamw_step_for(const AdamWConfig& c, int64_t t, double lr) {
  const double bc1 = 1.0 - std::pow(c.beta1, double(t));
  const double bc2 = 1.0 - std::pow(c.beta2, double(t));
  return {float(lr / bc1), float(std::sqrt(bc2)), float(1.0 - lr * c.weight_decay),
          float(c.beta1),  float(c.beta2),        float(c.eps)};
}

// p *= decay; m = lerp(m, g, 1-b1); v = b2 v + (1-b2) g^2; p -= step_size m / (sqrt(v)/bc2 + eps).
HS_HD void adamw_update(float& p, float g, float& m, float& v, const AdamWStep& s) {
  p *= s.decay;
  m += (g - m) * (1.0f - s.b1);  // torch: m.lerp_(g, 1-b1)
  v = v * s.b2 + (1.0f - s.b2) * g * g;
  const float denom = hdmath::sqrt(v) / s.bc2_sqrt + s.eps;
  p -= s.step_size * (m / denom);
}

}  // namespace hs
