// Surgery on the CPU: the model as one fp32 training copy, the target slices' gradients from the
// shared block's backward (engine/cpu/train.h), AdamW on the host.
#pragma once

#include <vector>

#include "engine/cpu/forward.h"
#include "engine/cpu/optimizer.h"
#include "engine/cpu/train.h"

namespace hs {

class CpuSurgery final : public Surgery {
 public:
  // The checkpoint is converted once into the training copy (streamed). threads > 1 runs that
  // many sequences of a batch at once, each single-threaded (for small models, whose matrices
  // keep few threads busy); the result depends on it, never on timing.
  CpuSurgery(Model& model, std::vector<HeadRef> targets, AdamWConfig adam, int threads);

  double accumulate(const std::vector<const std::vector<int32_t>*>& batch, double weight) override;
  double step(double lr, double max_norm) override;
  Engine& engine() override { return engine_; }
  const TargetSlices& masters() override { return masters_; }
  const AdamState& adam() override { return opt_.state(); }
  void set(const TargetSlices& masters, const AdamState& adam) override;

 private:
  TrainWeights w_;
  TrainWeightsSource source_;
  CpuEngine engine_;
  TargetSlices masters_, grad_;
  AdamW opt_;
  std::vector<Gradients> scratch_;  // one per thread
};

}  // namespace hs
