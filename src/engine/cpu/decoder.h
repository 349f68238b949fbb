// Incremental decoding with a key/value cache on the CPU: each token goes through the model
// once, attending to the cached keys and values of every earlier position, so generating N
// tokens costs N single-row passes instead of N full forward passes. The rows of a call go
// through the same block as the full forward pass (engine/cpu/block.h), one segment per feed.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/cpu/block.h"
#include "engine/cpu/weights.h"
#include "engine/engine.h"

namespace hs {

class Decoder final : public IncrementalDecoder {
 public:
  // Room for `batch` independent sequences of up to `capacity` tokens each. The cache holds
  // 2 * layers * batch * capacity * hidden floats.
  Decoder(WeightSource& model, int64_t batch, int64_t capacity);

  // See IncrementalDecoder.
  const std::vector<float>& extend(std::span<const Feed> feeds) override;
  void fork(int64_t from, int64_t to) override;
  int64_t capacity() const override { return cap_; }
  int64_t length(int64_t seq) const { return len_[seq]; }

 private:
  // Keys (kv = 0) or values (kv = 1) of layer l, sequence b: [H][capacity][head_dim].
  float* cache(int64_t kv, int64_t l, int64_t b) const;

  WeightSource& model_;
  int64_t batch_, cap_;
  std::vector<int64_t> len_;
  std::unique_ptr<float[]> kv_;
  BlockActs acts_;
  std::vector<float> x_, last_, logits_;
};

}  // namespace hs
