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

namespace hs::cpu {

template <class T>
void cross_entropy_backward(T* dlogits, const T* logits, const T* lse, const int32_t* target,
                            const T* scale, int64_t Tn, int64_t Vc, int64_t v0) {
#pragma omp parallel for if (Tn * Vc > (1 << 16))
  for (int64_t t = 0; t < Tn; ++t) {
    T* d = dlogits + t * Vc;
    if (target[t] < 0) {
      std::fill(d, d + Vc, T(0));
      continue;
    }
    const T* row = logits + t * Vc;
    for (int64_t v = 0; v < Vc; ++v) d[v] = scale[t] * std::exp(row[v] - lse[t]);
    const int64_t k = int64_t(target[t]) - v0;
    if (k >= 0 && k < Vc) d[k] -= scale[t];
  }
}

template void cross_entropy_backward<float>(float*, const float*, const float*, const int32_t*,
                                            const float*, int64_t, int64_t, int64_t);
template void cross_entropy_backward<double>(double*, const double*, const double*, const int32_t*,
                                             const double*, int64_t, int64_t, int64_t);

}  // namespace hs::cpu
