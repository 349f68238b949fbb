// The trainable state of a surgery: the target heads' slices, gathered from the full weights
// into compact tensors (the optimizer's view) and scattered back after each step.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "model/train.h"

namespace hs {

struct TargetSlices {
  std::vector<HeadRef> targets;  // sorted
  // Per target: qkv rows [3hd, d], qkv bias [3hd], dense input columns as [d, hd].
  std::vector<std::vector<float>> qkv_rows, qkv_bias, dense_cols;

  static TargetSlices gather(const TrainWeights& w, std::vector<HeadRef> targets);
  void scatter(TrainWeights& w) const;
  // Same order as Gradients::buffers() of a surgical Gradients with the same targets.
  std::vector<std::vector<float>*> buffers();
};

enum class InitKind { XavierNormal, XavierUniform };

// The paper's surgery on the target heads of w: Q, K and V rows of query_key_value re-drawn
// (Xavier over the head's [3hd, d] row block as one tensor, like init on the slice
// weight[rows]: fan_in = d, fan_out = 3hd), their bias rows zeroed, and the
// head's input columns of dense zeroed. Deterministic for a seed.
void reinitialize(TrainWeights& w, const std::vector<HeadRef>& targets, InitKind kind,
                  uint64_t seed);

}  // namespace hs
