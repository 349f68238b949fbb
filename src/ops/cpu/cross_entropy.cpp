#include <algorithm>
#include <cmath>

#include "ops/cpu/ops.h"

namespace hs::cpu {

void logsumexp_update(const float* logits, int64_t T, int64_t Vc, float* m, double* s) {
#pragma omp parallel for if (T * Vc > (1 << 16))
  for (int64_t t = 0; t < T; ++t) {
    const float* row = logits + t * Vc;
    const float cmax = *std::max_element(row, row + Vc);
    const float nm = std::max(m[t], cmax);
    double acc = 0;
    for (int64_t v = 0; v < Vc; ++v) acc += std::exp(double(row[v] - nm));
    s[t] = (m[t] == -INFINITY ? 0.0 : s[t] * std::exp(double(m[t] - nm))) + acc;
    m[t] = nm;
  }
}

}  // namespace hs::cpu
