// Choosing the next token from logits as Hugging Face's generate() does: repetition penalty, then
// temperature, top-k and top-p (nucleus), then a draw; temperature 0 is greedy. The draws come
// from util/random.h's Rng, whose stream is fixed by the C++ standard, so a seed gives the same
// draws on every platform.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "util/random.h"

namespace hs {

struct SamplingOptions {
  double temperature = 0.8;         // 0 = greedy (argmax)
  int64_t top_k = 0;                // keep the k most probable tokens; 0 = all
  double top_p = 0.92;              // keep the smallest set with probability >= p; 1 = all
  double repetition_penalty = 1.0;  // 1 = off
};

// HF's RepetitionPenaltyLogitsProcessor: for every distinct token of `context` (prompt and
// generated so far), logit > 0 becomes logit / penalty, else logit * penalty.
void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> context,
                              double penalty);

struct Candidate {
  int32_t id;
  double prob;  // renormalised over the candidates
};
// The tokens that survive temperature, then top-k, then top-p, with their probabilities. When
// top-k or top-p cut, most probable first (ties: lower id first), else in id order.
// temperature must be > 0.
std::vector<Candidate> sampling_candidates(std::span<const float> logits, const SamplingOptions& o);

// Index of the largest logit (the first among equals, like torch.argmax).
int32_t argmax(std::span<const float> logits);

// The next token: argmax when temperature is 0, else a draw from sampling_candidates.
// The repetition penalty is applied first when != 1 (logits is a working copy, modified).
int32_t next_token(std::span<float> logits, std::span<const int32_t> context,
                   const SamplingOptions& o, Rng& rng);

}  // namespace hs
