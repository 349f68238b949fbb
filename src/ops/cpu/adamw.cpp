#include "ops/cpu/ops.h"

namespace hs::cpu {

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& s) {
#pragma omp parallel for if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) adamw_update(p[i], g[i], m[i], v[i], s);
}

}  // namespace hs::cpu
