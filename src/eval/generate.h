// Greedy decoding (argmax of the full forward pass at each step).
#pragma once

#include <cstdint>
#include <vector>

#include "model/model.h"

namespace hs {

// prompt + n new tokens, each the argmax of the logits at the last position.
std::vector<int32_t> greedy_generate(WeightSource& w, std::vector<int32_t> prompt, int n);

}  // namespace hs
