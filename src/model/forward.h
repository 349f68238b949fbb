// Inference forward pass of BloomForCausalLM on CPU (DESIGN §2), over a batch of sequences of
// any lengths, layer-major: every sequence goes through layer l before layer l+1 is touched, so
// a streamed model converts each layer once per call.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/model.h"

namespace hs {

struct ForwardOptions {
  bool head_stats = false;  // per-head bos/entropy/local means over rows
  bool probs = false;       // attention probabilities of every layer (tests; T x T per head)
  bool logits = false;      // full logits [T, V]
  bool nll = false;         // summed next-token NLL (chunked over the vocabulary)
  std::function<void(int64_t layers_done, int64_t layers)> progress;  // after each layer
  // [L]: layers whose MLP output is replaced by zero (ablation studies); empty = none.
  std::vector<uint8_t> ablate_mlp;
};

struct SequenceOutput {
  // [L * H], index l * H + h, means over the T query rows.
  std::vector<double> bos_mass, entropy, local_mass;
  std::vector<std::vector<float>> probs;  // [L] of [H, T, T]
  std::vector<float> logits;              // [T, V]
  double nll_sum = 0;                     // sum over t < T-1 of -log p(ids[t+1] | ids[..t])
  int64_t predicted = 0;                  // T - 1
};

std::vector<SequenceOutput> forward(WeightSource& model,
                                    const std::vector<std::vector<int32_t>>& seqs,
                                    const ForwardOptions& opts);

}  // namespace hs
