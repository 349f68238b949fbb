// Text generation with the KV-cache decoder: greedy or sampled (HF generate() semantics), several
// samples of one prompt decoded together as a batch after a single prefill.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/cpu/forward.h"
#include "eval/sampling.h"

namespace hs {

struct GenerateOptions {
  int64_t max_new_tokens = 60;
  SamplingOptions sampling;  // temperature 0 = greedy
  uint64_t seed = 0;
  int64_t n = 1;  // samples of the prompt
  bool stop_at_eos = true;
};

struct Completion {
  std::vector<int32_t> ids;  // the new tokens, ending with eos when it stopped the sample
  bool eos = false;
};

// n completions of `prompt` (non-empty). Sample s draws from its own stream of (seed, s), so its
// draws depend neither on how many samples are drawn nor on other prompts (its logits may differ
// in the last bits between batch sizes).
std::vector<Completion> generate(Engine& e, std::span<const int32_t> prompt,
                                 const GenerateOptions& o);

// prompt + up to n new tokens, each the argmax of the logits after the last token, stopping
// after eos (config eos_token_id). An empty prompt is returned as is.
std::vector<int32_t> greedy_generate(Engine& e, std::vector<int32_t> prompt, int n);
// On the CPU, over any weight source (a checkpoint, a run's weights).
inline std::vector<int32_t> greedy_generate(WeightSource& w, std::vector<int32_t> prompt, int n) {
  CpuEngine e(w);
  return greedy_generate(e, std::move(prompt), n);
}

}  // namespace hs
