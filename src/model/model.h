// A BLOOM model ready for fp32 CPU math: the checkpoint's (possibly half-precision, memory-
// mapped) tensors, converted to fp32 on demand. When the fp32 weights fit comfortably in RAM they
// are converted once and kept; otherwise each layer is converted when used and dropped after
// (streaming), so bloom-7b1 (28 GB in fp32) still runs on a 24 GB machine.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/checkpoint.h"

namespace hs {

// A tensor as fp32: either a view of the mapped file (aligned F32 data) or an owned copy.
struct F32Tensor {
  const float* data = nullptr;
  std::vector<float> owned;
  int64_t numel = 0;
};

struct LayerWeights {
  F32Tensor ln1_w, ln1_b, qkv_w, qkv_b, dense_w, dense_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
};

// What an inference pass needs from a set of weights, as fp32: a checkpoint on disk (Model) or
// the weights of a run in progress (TrainWeights).
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const BloomConfig& config() const = 0;
  virtual const std::vector<float>& slopes() const = 0;
  // The returned weights must not outlive the source.
  virtual std::shared_ptr<const LayerWeights> layer(int64_t l) = 0;
  // out[T, d] = word_embeddings[ids]; throws hs::Error for an id outside the vocabulary.
  virtual void embed(std::span<const int32_t> ids, float* out) = 0;
  virtual const float* emb_ln_w() const = 0;
  virtual const float* emb_ln_b() const = 0;
  virtual const float* lnf_w() const = 0;
  virtual const float* lnf_b() const = 0;
  // Calls fn(first_row, rows, data) over the tied output embedding in chunks of fp32 rows.
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
  const BloomConfig& config() const override { return ckpt_.config(); }
  const std::vector<float>& slopes() const override { return slopes_; }
  // Whether all converted weights stay in memory (false = streaming layer by layer).
  bool resident() const { return resident_; }

  std::shared_ptr<const LayerWeights> layer(int64_t l) override;
  void embed(std::span<const int32_t> ids, float* out) override;
  const float* emb_ln_w() const override { return emb_ln_w_.data; }
  const float* emb_ln_b() const override { return emb_ln_b_.data; }
  const float* lnf_w() const override { return lnf_w_.data; }
  const float* lnf_b() const override { return lnf_b_.data; }
  void for_each_vocab_chunk(int64_t chunk_rows,
                            const std::function<void(int64_t, int64_t, const float*)>& fn) override;

 private:
  F32Tensor load(const std::string& name, F32Tensor&& reuse = {});

  Checkpoint ckpt_;
  std::vector<float> slopes_;
  bool resident_ = false;
  std::vector<std::shared_ptr<const LayerWeights>> layers_;  // filled when resident
  F32Tensor emb_ln_w_, emb_ln_b_, lnf_w_, lnf_b_;
  F32Tensor emb_;                        // whole embedding, only when resident
  std::unique_ptr<LayerWeights> spare_;  // streaming: buffers of the last released layer
};

}  // namespace hs
