// AdamW, learning-rate schedule and gradient clipping with PyTorch's exact semantics, on the
// trainable tensors only (docs/numerics.md §3).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ops/adamw.h"

namespace hs {

// torch.optim.AdamW on a list of fp32 tensors; moments kept in fp32 like PyTorch's.
class AdamW {
 public:
  AdamW(AdamWConfig cfg, const std::vector<size_t>& sizes);
  // One step with learning rate lr (the scheduled value), ops/adamw.h's update per element.
  void step(const std::vector<std::vector<float>*>& params,
            const std::vector<std::vector<float>*>& grads, double lr);
  int64_t steps() const { return t_; }
  const AdamWConfig& config() const { return cfg_; }
  // State for resuming: step count and moments.
  std::vector<std::vector<float>>& m() { return m_; }
  std::vector<std::vector<float>>& v() { return v_; }
  void set_steps(int64_t t) { t_ = t; }

 private:
  AdamWConfig cfg_;
  int64_t t_ = 0;
  std::vector<std::vector<float>> m_, v_;
};

// LambdaLR factor for optimizer step s (0-based): linear warm-up s/W for s < W, then cosine
// 0.5 (1 + cos(pi (s-W)/(total-W))) down to 0 (HF get_cosine_schedule_with_warmup).
double lr_factor(int64_t s, int64_t warmup, int64_t total);
// The paper's warm-up: min(100, total / 4).
int64_t default_warmup(int64_t total);

// Global L2 norm over all buffers (double accumulation); scales them by max_norm/(norm + 1e-6)
// when that is below 1 (torch.nn.utils.clip_grad_norm_). Returns the norm before clipping.
double clip_grad_norm(const std::vector<std::vector<float>*>& grads, double max_norm);

}  // namespace hs
