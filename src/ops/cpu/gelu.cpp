#include "ops/cpu/ops.h"

namespace hs::cpu {

template <class T>
void gelu_forward(T* out, const T* inp, int64_t n, Gelu kind) {
#pragma omp parallel for simd if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) out[i] = gelu(inp[i], kind);
}

template <class T>
void gelu_backward(T* dinp, const T* dout, const T* inp, int64_t n, Gelu kind) {
#pragma omp parallel for simd if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) dinp[i] = dout[i] * gelu_grad(inp[i], kind);
}

template void gelu_forward<float>(float*, const float*, int64_t, Gelu);
template void gelu_forward<double>(double*, const double*, int64_t, Gelu);
template void gelu_backward<float>(float*, const float*, const float*, int64_t, Gelu);
template void gelu_backward<double>(double*, const double*, const double*, int64_t, Gelu);

}  // namespace hs::cpu
