#include "eval/generate.h"

#include <algorithm>

#include "model/forward.h"

namespace hs {

std::vector<int32_t> greedy_generate(WeightSource& w, std::vector<int32_t> ids, int n) {
  const int64_t V = w.config().vocab;
  ForwardOptions o;
  o.logits = true;
  for (int i = 0; i < n && !ids.empty(); ++i) {
    const auto out = forward(w, {ids}, o);
    const float* last = out[0].logits.data() + (int64_t(ids.size()) - 1) * V;
    ids.push_back(int32_t(std::max_element(last, last + V) - last));
  }
  return ids;
}

}  // namespace hs
