// The weights of a model as the fp32 CPU code reads them, by role (model/roles.h): from a
// checkpoint on disk (Model) or from the weights of a run in progress (engine/cpu/train.h).
//
// A Model keeps the checkpoint's (possibly half-precision, memory-mapped) tensors and converts
// them to fp32 on demand. When the fp32 weights fit comfortably in RAM they are converted once
// and kept; otherwise each layer is converted when used and dropped after (streaming), so
// bloom-7b1 (28 GB in fp32) still runs on a 24 GB machine.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/roles.h"

namespace hs {

// A tensor as fp32: either a view of the mapped file (aligned F32 data) or an owned copy.
struct F32Tensor {
  const float* data = nullptr;
  std::vector<float> owned;
  int64_t numel = 0;
};

// One layer's tensors by role; an absent role (a bias the family does not have) is null.
struct LayerWeights {
  std::array<F32Tensor, kLayerRoles> t;
  const float* operator[](LayerRole r) const { return t[int(r)].data; }
};

// What a pass needs from a set of weights, as fp32.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const ModelConfig& config() const = 0;
  virtual const std::vector<float>& slopes() const = 0;
  // The returned weights must not outlive the source.
  virtual std::shared_ptr<const LayerWeights> layer(int64_t l) = 0;
  // out[T, d] = token embedding rows of ids; throws hs::Error for an id outside the vocabulary.
  virtual void embed(std::span<const int32_t> ids, float* out) = 0;
  // The embedding and final norms (ModelRole emb_norm*, out_norm*; null when absent).
  virtual const float* norm(ModelRole r) const = 0;
  // Calls fn(first_row, rows, data) over the output head (lm_head, or the tied embedding) in
  // chunks of fp32 rows.
  virtual void for_each_vocab_chunk(
      int64_t chunk_rows, const std::function<void(int64_t, int64_t, const float*)>& fn) = 0;
};

struct ModelOptions {
  // Bytes of converted fp32 weights that may stay resident; -1 = half of MemAvailable.
  int64_t cache_bytes = -1;
};

class Model : public WeightSource {
 public:
  explicit Model(const std::string& spec, ModelOptions opts = {});

  const Checkpoint& checkpoint() const { return ckpt_; }
  const ModelConfig& config() const override { return ckpt_.config(); }
  const std::vector<float>& slopes() const override { return slopes_; }
  // Whether all converted weights stay in memory (false = streaming layer by layer).
  bool resident() const { return resident_; }

  std::shared_ptr<const LayerWeights> layer(int64_t l) override;
  void embed(std::span<const int32_t> ids, float* out) override;
  const float* norm(ModelRole r) const override { return norms_[int(r)].data; }
  void for_each_vocab_chunk(int64_t chunk_rows,
                            const std::function<void(int64_t, int64_t, const float*)>& fn) override;

 private:
  Checkpoint ckpt_;
  std::vector<float> slopes_;
  bool resident_ = false;
  std::vector<std::shared_ptr<const LayerWeights>> layers_;  // filled when resident
  std::array<F32Tensor, kModelRoles> norms_;                 // the norm roles
  F32Tensor emb_, head_;                 // whole embedding and untied head, only when resident
  std::unique_ptr<LayerWeights> spare_;  // streaming: buffers of the last released layer
};

// The whole output head's rows in chunks (the tied embedding or lm_head), for any source that
// keeps them as one fp32 [V, d] array.
void for_each_row_chunk(const float* rows, int64_t V, int64_t d, int64_t chunk_rows,
                        const std::function<void(int64_t, int64_t, const float*)>& fn);

}  // namespace hs
