#include "surgery/optimizer.h"

#include <algorithm>
#include <cmath>

#include "ops/cpu/ops.h"

namespace hs {

AdamW::AdamW(AdamWConfig cfg, const std::vector<size_t>& sizes) : cfg_(cfg) {
  for (size_t n : sizes) {
    m_.emplace_back(n, 0.0f);
    v_.emplace_back(n, 0.0f);
  }
}

void AdamW::step(const std::vector<std::vector<float>*>& params,
                 const std::vector<std::vector<float>*>& grads, double lr) {
  const AdamWStep s = adamw_step_for(cfg_, ++t_, lr);
  for (size_t k = 0; k < params.size(); ++k)
    cpu::adamw_step(params[k]->data(), grads[k]->data(), m_[k].data(), v_[k].data(),
                    int64_t(params[k]->size()), s);
}

double lr_factor(int64_t s, int64_t warmup, int64_t total) {
  if (s < warmup) return double(s) / double(std::max<int64_t>(1, warmup));
  const double progress = double(s - warmup) / double(std::max<int64_t>(1, total - warmup));
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

int64_t default_warmup(int64_t total) { return std::min<int64_t>(100, total / 4); }

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
