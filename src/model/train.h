// Training-time BLOOM on CPU: all weights as owned fp32 tensors, a forward pass that keeps what
// the backward needs, and the backward itself in two modes (DESIGN §4):
//  - full: every parameter gets a gradient (pretraining, fine-tuning baselines);
//  - surgical: only the target heads' Q/K/V rows, qkv bias rows and dense input columns get
//    gradients; no weight gradient is computed for any frozen tensor, and the backward stops at
//    the lowest layer holding a target.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "model/model.h"

namespace hs {

struct TrainLayer {
  std::vector<float> ln1_w, ln1_b, qkv_w, qkv_b, dense_w, dense_b, ln2_w, ln2_b, fc1_w, fc1_b,
      fc2_w, fc2_b;
};

struct TrainWeights {
  BloomConfig config;
  std::vector<float> slopes;
  std::vector<float> emb, emb_ln_w, emb_ln_b, lnf_w, lnf_b;
  std::vector<TrainLayer> layers;

  static TrainWeights from_model(Model& m);
  // Canonical tensor name → its buffer, in checkpoint order (used to save and to compare).
  std::vector<std::pair<std::string, std::vector<float>*>> named();
  std::vector<std::pair<std::string, const std::vector<float>*>> named() const;
};

// Inference (forward, diagnose, perplexity) on the weights of a run in progress.
class TrainWeightsSource : public WeightSource {
 public:
  explicit TrainWeightsSource(TrainWeights& w) : w_(w) {}
  const BloomConfig& config() const override { return w_.config; }
  const std::vector<float>& slopes() const override { return w_.slopes; }
  std::shared_ptr<const LayerWeights> layer(int64_t l) override;
  void embed(std::span<const int32_t> ids, float* out) override;
  const float* emb_ln_w() const override { return w_.emb_ln_w.data(); }
  const float* emb_ln_b() const override { return w_.emb_ln_b.data(); }
  const float* lnf_w() const override { return w_.lnf_w.data(); }
  const float* lnf_b() const override { return w_.lnf_b.data(); }
  void for_each_vocab_chunk(int64_t chunk_rows,
                            const std::function<void(int64_t, int64_t, const float*)>& fn) override;

 private:
  TrainWeights& w_;
};

// A target head: its Q/K/V rows [h*3hd, (h+1)*3hd) of query_key_value and its input columns
// [h*hd, (h+1)*hd) of dense.
struct HeadRef {
  int layer = 0, head = 0;
  auto operator<=>(const HeadRef&) const = default;
};

// Gradients of a training step. In full mode `full` has the shape of TrainWeights; in surgical
// mode only the per-target slices exist (compact: qkv rows [3hd, d], bias [3hd], dense
// columns as [d, hd]).
struct Gradients {
  bool full_mode = false;
  TrainWeights full;
  std::vector<HeadRef> targets;
  std::vector<std::vector<float>> qkv_rows, qkv_bias, dense_cols;

  static Gradients surgical(const BloomConfig& c, std::vector<HeadRef> targets);
  static Gradients all(const TrainWeights& w);
  void zero();
  // Every gradient buffer, for norms, clipping and the optimizer.
  std::vector<std::vector<float>*> buffers();
};

// The demo recipe's induced collapse (pretraining only, full mode): heads [l * H + h] != 0 are
// pushed onto the first token by an auxiliary loss
//   weight_seq * strength * sum over those heads and rows t >= 1 of -log p[t, 0],
// whose gradient reaches only those heads' own query_key_value rows and bias (it is not
// propagated into the residual stream).
struct SinkTerm {
  std::vector<uint8_t> heads;  // [L * H]
  double strength = 0;
  double loss = 0;  // out: the auxiliary loss of the last call (included in its return value)
};

// Forward + backward of one sequence; adds to g the gradient of
//   sum_t weight * CE(logits[t], ids[t+1])  over t < T-1  (+ the sink term when given),
// and returns that (weighted) loss sum. Thread-parallel inside each operation.
double loss_and_grad(const TrainWeights& w, const std::vector<int32_t>& ids, double weight,
                     Gradients& g, SinkTerm* sink = nullptr);

// loss_and_grad over a batch with the sequences spread over threads (one Gradients per thread
// in `scratch`, each thread running the operations single-threaded), summed into scratch[0] in
// a fixed order: the result depends on the thread count, never on timing. For small models,
// whose matrices are too small to keep several threads busy inside one operation. Zeroes the
// scratch gradients first; sink->loss receives the batch's auxiliary loss.
double batch_loss_and_grad(const TrainWeights& w,
                           const std::vector<const std::vector<int32_t>*>& seqs, double weight,
                           std::vector<Gradients>& scratch, SinkTerm* sink = nullptr);

}  // namespace hs
