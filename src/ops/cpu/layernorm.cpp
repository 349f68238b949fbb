#include <cmath>

#include "ops/cpu/ops.h"

namespace hs::cpu {

template <class T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* w, const T* b, int64_t N,
                       int64_t C, T eps) {
#pragma omp parallel for if (N * C > (1 << 15))
  for (int64_t i = 0; i < N; ++i) {
    const T* x = inp + i * C;
    // Double accumulation: rows of 4096+ values lose digits in fp32 sums.
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += x[c];
    const double mu = s / double(C);
    double v = 0;
    for (int64_t c = 0; c < C; ++c) v += (x[c] - mu) * (x[c] - mu);
    const T m = T(mu);
    const T r = T(1.0 / std::sqrt(v / double(C) + double(eps)));
    T* y = out + i * C;
    if (b)
      for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - m) * r * w[c] + b[c];
    else
      for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - m) * r * w[c];
    if (mean) mean[i] = m;
    if (rstd) rstd[i] = r;
  }
}

template <class T>
void layernorm_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w,
                        const T* mean, const T* rstd, int64_t N, int64_t C) {
  // Rows are independent for dinp; dw/db sum over rows, so they are accumulated serially after.
#pragma omp parallel for if (N * C > (1 << 15))
  for (int64_t i = 0; i < N; ++i) {
    const T* go = dout + i * C;
    const T* x = inp + i * C;
    double dmean = 0, dnorm_mean = 0;
    for (int64_t c = 0; c < C; ++c) {
      const double n = double(x[c] - mean[i]) * rstd[i];
      const double dn = double(go[c]) * w[c];
      dmean += dn;
      dnorm_mean += dn * n;
    }
    dmean /= double(C);
    dnorm_mean /= double(C);
    T* gi = dinp + i * C;
    for (int64_t c = 0; c < C; ++c) {
      const double n = double(x[c] - mean[i]) * rstd[i];
      const double dn = double(go[c]) * w[c];
      gi[c] += T((dn - dmean - n * dnorm_mean) * rstd[i]);
    }
  }
  if (!dw && !db) return;
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c) {
      if (dw) dw[c] += dout[i * C + c] * (inp[i * C + c] - mean[i]) * rstd[i];
      if (db) db[c] += dout[i * C + c];
    }
}

template void layernorm_forward<float>(float*, float*, float*, const float*, const float*,
                                       const float*, int64_t, int64_t, float);
template void layernorm_forward<double>(double*, double*, double*, const double*, const double*,
                                        const double*, int64_t, int64_t, double);
template void layernorm_backward<float>(float*, float*, float*, const float*, const float*,
                                        const float*, const float*, const float*, int64_t, int64_t);
template void layernorm_backward<double>(double*, double*, double*, const double*, const double*,
                                         const double*, const double*, const double*, int64_t,
                                         int64_t);

}  // namespace hs::cpu
