#include <cmath>

#include "ops/cpu/ops.h"

namespace hs::cpu {

namespace {
constexpr double kS = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kC = 0.044715;
}  // namespace

template <class T>
void gelu_forward(T* out, const T* inp, int64_t n) {
#pragma omp parallel for simd if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    const T x = inp[i];
    out[i] = T(0.5) * x * (T(1) + std::tanh(T(kS) * x * (T(1) + T(kC) * x * x)));
  }
}

template <class T>
void gelu_backward(T* dinp, const T* dout, const T* inp, int64_t n) {
#pragma omp parallel for simd if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    const T x = inp[i];
    const T th = std::tanh(T(kS) * x * (T(1) + T(kC) * x * x));
    const T du = T(kS) * (T(1) + T(3 * kC) * x * x);
    dinp[i] = dout[i] * (T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * du);
  }
}

template void gelu_forward<float>(float*, const float*, int64_t);
template void gelu_forward<double>(double*, const double*, int64_t);
template void gelu_backward<float>(float*, const float*, const float*, int64_t);
template void gelu_backward<double>(double*, const double*, const double*, int64_t);

}  // namespace hs::cpu
