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

struct ModelOptions {
  // Bytes of converted fp32 weights that may stay resident; -1 = half of MemAvailable.
  int64_t cache_bytes = -1;
};

class Model {
 public:
  explicit Model(const std::string& spec, ModelOptions opts = {});

  const Checkpoint& checkpoint() const { return ckpt_; }
  const BloomConfig& config() const { return ckpt_.config(); }
  const std::vector<float>& slopes() const { return slopes_; }
  // Whether all converted weights stay in memory (false = streaming layer by layer).
  bool resident() const { return resident_; }

  // The returned weights must not outlive the Model.
  std::shared_ptr<const LayerWeights> layer(int64_t l);
  // out[T, d] = word_embeddings[ids]; throws hs::Error for an id outside the vocabulary.
  void embed(std::span<const int32_t> ids, float* out);
  const F32Tensor& emb_ln_w() const { return emb_ln_w_; }
  const F32Tensor& emb_ln_b() const { return emb_ln_b_; }
  const F32Tensor& lnf_w() const { return lnf_w_; }
  const F32Tensor& lnf_b() const { return lnf_b_; }
  // Calls fn(first_row, rows, data) over the tied output embedding in chunks of fp32 rows.
  void for_each_vocab_chunk(int64_t chunk_rows,
                            const std::function<void(int64_t, int64_t, const float*)>& fn);

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
