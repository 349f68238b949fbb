// Inference on the CPU (fp32, or bf16 products on bf16 weights: Model::bf16_products): the forward
// pass over a batch of sequences of any lengths, layer-major (every sequence goes through layer l
// before layer l+1 is touched, so a streamed model converts each layer once per call), and the CPU
// Engine.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/cpu/weights.h"
#include "engine/engine.h"

namespace hs {

std::vector<SequenceOutput> forward(WeightSource& model,
                                    const std::vector<std::vector<int32_t>>& seqs,
                                    const ForwardOptions& opts);

// The fp32 CPU reference over any weight source (a checkpoint, or a run's weights in memory).
class CpuEngine : public Engine {
 public:
  explicit CpuEngine(WeightSource& w) : w_(w) {}
  const ModelConfig& config() const override { return w_.config(); }
  const std::vector<float>& slopes() const override { return w_.slopes(); }
  std::string device() const override { return "cpu"; }
  std::vector<SequenceOutput> forward(const std::vector<std::vector<int32_t>>& seqs,
                                      const ForwardOptions& opts) override {
    return hs::forward(w_, seqs, opts);
  }
  std::unique_ptr<IncrementalDecoder> decoder(int64_t batch, int64_t capacity) override;

 private:
  WeightSource& w_;
};

// x[N, d] = the token embedding of ids, then the embedding LayerNorm where the family has one.
void embed_rows(WeightSource& w, std::span<const int32_t> ids, float* x);

}  // namespace hs
