// The learning-rate schedule of a surgery with PyTorch's exact semantics (docs/numerics.md §3).
#pragma once

#include <cstdint>

namespace hs {

// LambdaLR factor for optimizer step s (0-based): linear warm-up s/W for s < W, then cosine
// 0.5 (1 + cos(pi (s-W)/(total-W))) down to 0 (HF get_cosine_schedule_with_warmup).
double lr_factor(int64_t s, int64_t warmup, int64_t total);
// The paper's warm-up: min(100, total / 4).
int64_t default_warmup(int64_t total);

}  // namespace hs
