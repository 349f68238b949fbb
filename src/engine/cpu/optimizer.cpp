#include "engine/cpu/optimizer.h"

#include <cmath>

#include "ops/cpu/ops.h"

namespace hs {

AdamW::AdamW(AdamWConfig cfg, const std::vector<size_t>& sizes) : cfg_(cfg) {
  for (size_t n : sizes) {
    st_.m.emplace_back(n, 0.0f);
    st_.v.emplace_back(n, 0.0f);
  }
}

void AdamW::step(const std::vector<std::vector<float>*>& params,
                 const std::vector<std::vector<float>*>& grads, double lr) {
  const AdamWStep s = adamw_step_for(cfg_, ++st_.steps, lr);
  for (size_t k = 0; k < params.size(); ++k)
    cpu::adamw_step(params[k]->data(), grads[k]->data(), st_.m[k].data(), st_.v[k].data(),
                    int64_t(params[k]->size()), s);
}

double clip_grad_norm(const std::vector<std::vector<float>*>& grads, double max_norm) {
  double sq = 0;
  for (const auto* g : grads)
    for (float x : *g) sq += double(x) * double(x);
  const double norm = std::sqrt(sq);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0)
    for (auto* g : grads)
      for (float& x : *g) x = float(double(x) * coef);
  return norm;
}

}  // namespace hs
