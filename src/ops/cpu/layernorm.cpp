#include <cmath>

#include "ops/cpu/ops.h"

namespace hs::cpu {

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                       const float* b, int64_t N, int64_t C, float eps) {
#pragma omp parallel for if (N * C > (1 << 15))
  for (int64_t i = 0; i < N; ++i) {
    const float* x = inp + i * C;
    // Double accumulation: rows of 4096+ values lose digits in fp32 sums.
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += x[c];
    const double mu = s / C;
    double v = 0;
    for (int64_t c = 0; c < C; ++c) v += (x[c] - mu) * (x[c] - mu);
    const float m = float(mu);
    const float r = float(1.0 / std::sqrt(v / C + eps));
    float* y = out + i * C;
    for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - m) * r * w[c] + b[c];
    if (mean) mean[i] = m;
    if (rstd) rstd[i] = r;
  }
}

}  // namespace hs::cpu
