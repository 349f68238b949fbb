// AdamW and gradient clipping on the CPU with PyTorch's exact semantics, on fp32 tensors
// (docs/numerics.md §3): the optimizer of the CPU's surgery and of pretraining.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/engine.h"
#include "ops/adamw.h"

namespace hs {

// torch.optim.AdamW on a list of fp32 tensors; moments kept in fp32 like PyTorch's.
class AdamW {
 public:
  AdamW(AdamWConfig cfg, const std::vector<size_t>& sizes);
  // One step with learning rate lr (the scheduled value), ops/adamw.h's update per element.
  void step(const std::vector<std::vector<float>*>& params,
            const std::vector<std::vector<float>*>& grads, double lr);
  const AdamWConfig& config() const { return cfg_; }
  // Moments and step count, for resuming.
  AdamState& state() { return st_; }

 private:
  AdamWConfig cfg_;
  AdamState st_;
};

// Global L2 norm over all buffers (double accumulation); scales them by max_norm/(norm + 1e-6)
// when that is below 1 (torch.nn.utils.clip_grad_norm_). Returns the norm before clipping.
double clip_grad_norm(const std::vector<std::vector<float>*>& grads, double max_norm);

}  // namespace hs
