#include <cmath>

#include "ops/cpu/ops.h"

namespace hs::cpu {

void gelu_forward(float* x, int64_t n) {
#pragma omp parallel for simd if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(0.79788456f * v * (1.0f + 0.044715f * v * v)));
  }
}

}  // namespace hs::cpu
