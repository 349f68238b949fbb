// Training on the CPU: all weights as owned fp32 tensors by role, and one sequence's forward and
// backward through the shared block (engine/cpu/block.h) in two modes:
//  - full: every parameter gets a gradient (pretraining, fine-tuning baselines);
//  - surgical: only the target heads' Q/K/V rows, qkv bias rows and output-projection input
//    columns get gradients; no weight gradient is computed for any frozen tensor, and the
//    backward stops at the lowest layer holding a target.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/cpu/weights.h"
#include "model/slices.h"

namespace hs {

struct TrainLayer {
  std::array<std::vector<float>, kLayerRoles> t;  // empty = a role this config does not have
  std::vector<float>& operator[](LayerRole r) { return t[int(r)]; }
  const std::vector<float>& operator[](LayerRole r) const { return t[int(r)]; }
};

struct TrainWeights {
  ModelConfig config;
  std::vector<float> slopes;
  std::array<std::vector<float>, kModelRoles> model;  // empty = absent
  std::vector<TrainLayer> layers;

  std::vector<float>& operator[](ModelRole r) { return model[int(r)]; }
  const std::vector<float>& operator[](ModelRole r) const { return model[int(r)]; }

  static TrainWeights from_model(Model& m);
  // Every tensor of c at its shape, zero (fill it afterwards).
  static TrainWeights zeros(const ModelConfig& c);

  // One tensor of the model: its role (model/roles.h), name (without the prefix), shape and
  // buffer (in the internal qkv layout).
  struct Param : TensorRef {
    std::string name;
    std::vector<int64_t> shape;
    bool matrix;
    std::vector<float>* buf;
  };
  // Every tensor the config has, in checkpoint order (embedding, its norm, the layers, final
  // norm, untied head): for saving, comparing, initialising and the optimizer.
  std::vector<Param> params();
  std::vector<Param> params() const;  // buf points at const data: do not write through it
};

// A tensor's values in its checkpoint's layout from the internal one, and back (ops/qkv_layout.h:
// a row permutation of MPT's fused qkv weight and bias, the identity for every other tensor).
std::vector<float> to_file_layout(const ModelConfig& c, LayerRole r,
                                  const std::vector<float>& internal);
std::vector<float> from_file_layout(const ModelConfig& c, LayerRole r,
                                    const std::vector<float>& file);

// Inference (forward, diagnose, perplexity) on the weights of a run in progress.
class TrainWeightsSource : public WeightSource {
 public:
  explicit TrainWeightsSource(TrainWeights& w) : w_(w) {}
  const ModelConfig& config() const override { return w_.config; }
  const std::vector<float>& slopes() const override { return w_.slopes; }
  std::shared_ptr<const LayerWeights> layer(int64_t l) override;
  void embed(std::span<const int32_t> ids, float* out) override;
  const float* norm(ModelRole r) const override;
  void for_each_vocab_chunk(int64_t chunk_rows,
                            const std::function<void(int64_t, int64_t, const float*)>& fn) override;

 private:
  TrainWeights& w_;
};

// The target slices' current values in w, and the slices written into w.
TargetSlices gather_slices(const TrainWeights& w, std::vector<HeadRef> targets);
void scatter_slices(const TargetSlices& s, TrainWeights& w);

// Gradients of a training step. In full mode `full` has the shape of TrainWeights; in surgical
// mode only the target slices exist (model/slices.h: qkv rows [3hd, d], bias [3hd] (empty when
// the family has no qkv bias), output-projection columns as [d, hd]).
struct Gradients {
  bool full_mode = false;
  TrainWeights full;
  TargetSlices slices;

  static Gradients surgical(const ModelConfig& c, std::vector<HeadRef> targets);
  static Gradients all(const TrainWeights& w);
  void zero();
  // Every gradient buffer, for norms, clipping and the optimizer (absent biases left out).
  std::vector<std::vector<float>*> buffers();
};

// The demo recipe's induced collapse (pretraining only, full mode): heads [l * H + h] != 0 are
// pushed onto the first token by an auxiliary loss
//   weight_seq * strength * sum over those heads and rows t >= 1 of -log p[t, 0],
// whose gradient reaches only those heads' own qkv rows and bias (it is not propagated into the
// residual stream).
struct SinkTerm {
  std::vector<uint8_t> heads;  // [L * H]
  double strength = 0;
  double loss = 0;  // out: the auxiliary loss of the last call (included in its return value)
};

// Forward + backward of one sequence; adds to g the gradient of
//   sum_t weight * CE(logits[t], ids[t+1])  over t < T-1  (+ the sink term when given),
// and returns that (weighted) loss sum. Thread-parallel inside each operation. After Ctrl-C it
// throws hs::Interrupted at the next layer (or a few attention rows), g then incomplete.
double loss_and_grad(const TrainWeights& w, const std::vector<int32_t>& ids, double weight,
                     Gradients& g, SinkTerm* sink = nullptr);

// loss_and_grad over a batch with the sequences spread over threads (one Gradients per thread
// in `scratch`, each thread running the operations single-threaded), summed into scratch[0] in
// a fixed order: the result depends on the thread count, never on timing. For small models,
// whose matrices are too small to keep several threads busy inside one operation. Zeroes the
// scratch gradients first; sink->loss receives the batch's auxiliary loss. Interrupted (and any
// other exception) comes out after all threads have stopped, the gradients to be discarded.
double batch_loss_and_grad(const TrainWeights& w,
                           const std::vector<const std::vector<int32_t>*>& seqs, double weight,
                           std::vector<Gradients>& scratch, SinkTerm* sink = nullptr);

}  // namespace hs
