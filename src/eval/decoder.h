// Incremental decoding with a key/value cache on CPU: each token goes through the model once,
// attending to the cached keys and values of every earlier position, so generating N tokens
// costs N single-row passes instead of N full forward passes. Same numerics as model/forward.cpp
// (fp32, scores q.k/sqrt(hd) + slope*j, both residual variants).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "model/engine.h"
#include "model/model.h"

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
  // Keys (kv = 0) or values (kv = 1) of layer l, sequence b, head h: [capacity, head_dim].
  float* cache(int64_t kv, int64_t l, int64_t b, int64_t h) const;

  WeightSource& model_;
  int64_t batch_, cap_;
  std::vector<int64_t> len_;
  std::unique_ptr<float[]> kv_;
  std::vector<float> x_, a_, qkv_, ctx_, attn_out_, b_, h_, last_, logits_;
};

}  // namespace hs
