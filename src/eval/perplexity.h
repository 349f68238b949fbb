// Perplexity of a model on token sequences.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/cpu/forward.h"

namespace hs {

struct PerplexityResult {
  int64_t sequences = 0;                  // input sequences
  int64_t windows = 0;                    // pieces of at most max_length tokens actually scored
  int64_t tokens_scored = 0;              // predicted tokens (T - 1 per window)
  double nll_mean = 0;                    // mean NLL over every predicted token
  double ppl = 0;                         // exp(nll_mean)
  std::vector<double> sequence_nll_mean;  // per input sequence (NaN when it scored nothing)
};

// Each sequence is cut into consecutive non-overlapping windows of at most max_length tokens,
// each scored on its own (no context carried across windows). ablate_mlp: see ForwardOptions.
// progress(done, total) is called after each batch of windows.
PerplexityResult perplexity(Engine& model, const std::vector<std::vector<int32_t>>& seqs,
                            int64_t max_length,
                            const std::function<void(int64_t, int64_t)>& progress = {},
                            const std::vector<uint8_t>& ablate_mlp = {});
// On the CPU, over any weight source (a checkpoint, a run's weights).
inline PerplexityResult perplexity(WeightSource& w, const std::vector<std::vector<int32_t>>& seqs,
                                   int64_t max_length) {
  CpuEngine e(w);
  return perplexity(e, seqs, max_length);
}

}  // namespace hs
