// The trainable state of a surgery: the target heads' slices, gathered from the full weights
// into compact tensors (the optimizer's view) and scattered back after each step.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "engine/cpu/train.h"

namespace hs {

struct TargetSlices {
  std::vector<HeadRef> targets;  // sorted
  // Per target: qkv rows [3hd, d] (internal order q, k, v: ops/qkv_layout.h), qkv bias [3hd]
  // (empty when the family has none), output-projection input columns as [d, hd].
  std::vector<std::vector<float>> qkv_rows, qkv_bias, dense_cols;

  static TargetSlices gather(const TrainWeights& w, std::vector<HeadRef> targets);
  void scatter(TrainWeights& w) const;
  // Same order as Gradients::buffers() of a surgical Gradients with the same targets.
  std::vector<std::vector<float>*> buffers();
};

enum class InitKind { XavierNormal, XavierUniform };

// The paper's surgery on the target heads of w: the head's Q, K and V rows of the fused qkv
// projection re-drawn (Xavier over the head's [3hd, d] row block, in q, k, v order, as one
// tensor, like init on the slice weight[rows]: fan_in = d, fan_out = 3hd), their bias rows
// zeroed where the family has a bias, and the head's input columns of the output projection
// zeroed. Deterministic for a seed.
void reinitialize(TrainWeights& w, const std::vector<HeadRef>& targets, InitKind kind,
                  uint64_t seed);

}  // namespace hs
