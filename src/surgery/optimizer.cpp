#include "surgery/optimizer.h"

#include <algorithm>
#include <cmath>

namespace hs {

AdamW::AdamW(AdamWConfig cfg, const std::vector<size_t>& sizes) : cfg_(cfg) {
  for (size_t n : sizes) {
    m_.emplace_back(n, 0.0f);
    v_.emplace_back(n, 0.0f);
  }
}

void AdamW::step(const std::vector<std::vector<float>*>& params,
                 const std::vector<std::vector<float>*>& grads, double lr) {
  ++t_;
  // PyTorch computes these in double (Python floats) and the update in the tensor's dtype.
  const double bc1 = 1.0 - std::pow(cfg_.beta1, double(t_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, double(t_));
  const float step_size = float(lr / bc1);
  const float bc2_sqrt = float(std::sqrt(bc2));
  const float decay = float(1.0 - lr * cfg_.weight_decay);
  const float b1 = float(cfg_.beta1), b2 = float(cfg_.beta2), eps = float(cfg_.eps);
  for (size_t k = 0; k < params.size(); ++k) {
    float* p = params[k]->data();
    const float* g = grads[k]->data();
    float* m = m_[k].data();
    float* v = v_[k].data();
    const int64_t n = int64_t(params[k]->size());
#pragma omp parallel for if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) {
      p[i] *= decay;
      // torch: m.lerp_(g, 1-b1) = m + (1-b1)(g-m); v.mul_(b2).addcmul_(g, g, 1-b2)
      m[i] += (g[i] - m[i]) * (1.0f - b1);
      v[i] = v[i] * b2 + (1.0f - b2) * g[i] * g[i];
      const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      p[i] -= step_size * (m[i] / denom);
    }
  }
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
