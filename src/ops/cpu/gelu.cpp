#include <algorithm>
#include <cstring>

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

namespace {

// BLOOM's GELU as x·sigmoid(2u) = x / (1 + exp(-2u)), u = sqrt(2/π)·x·(1 + 0.044715·x²): the same
// function as 0.5·x·(1 + tanh(u)), with one exp and no call. exp(t) = 2^n·e^r, n = round(t/ln 2),
// |r| <= ln2/2, e^r by its Taylor polynomial to r^7 (truncation < 6e-9 relative), 2^n by the
// exponent bits; t clamped to [-87, 88] (2^n stays normal). Branch-free, so each clone's loop is
// vectorised (AVX-512: 16 lanes; AVX2: 8; CMakeLists.txt compiles this file without trapping
// math for that). glibc's tanhf is a scalar call: GELU was 21 % of a
// bloom-1b7 CPU diagnosis (NOTES, 2026-11-26). Error against the float64 function: a few ulp.
__attribute__((target_clones("avx512f", "avx2", "default"))) void gelu_tanh_fast(float* out,
                                                                                 const float* in,
                                                                                 int64_t n) {
  constexpr float kS = float(gelu_detail::kS), kC = float(gelu_detail::kC);
  for (int64_t i = 0; i < n; ++i) {
    const float x = in[i];
    float t = -2.0f * kS * x * (1.0f + kC * x * x);
    t = t == t ? std::min(std::max(t, -87.0f), 88.0f) : 0.0f;        // a NaN x is chosen back below
    const float nf = (t * 1.44269504f + 12582912.0f) - 12582912.0f;  // round to nearest (1.5·2^23)
    const float r = (t - nf * 0.693145751953125f) - nf * 1.428606765330187e-6f;  // ln2, two parts
    const float p =
        1.0f +
        r * (1.0f +
             r * (0.5f +
                  r * (1.0f / 6 +
                       r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040)))))));
    const int32_t bits = (int32_t(nf) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    // Past the clamp the true value is below 1e-38 of x: 0, as float's tanh gives it.
    const float g = t < 88.0f ? x / (1.0f + p * scale) : 0.0f * x;
    out[i] = x != x ? x : g;
  }
}

}  // namespace

void gelu_forward_fast(float* out, const float* inp, int64_t n, Gelu kind) {
  if (kind != Gelu::tanh) return gelu_forward<float>(out, inp, n, kind);
  // Blocks of 16k elements: the threads share the work, each block's loop stays vectorised.
  constexpr int64_t kBlock = 1 << 14;
#pragma omp parallel for if (n > (1 << 15))
  for (int64_t b = 0; b < n; b += kBlock) gelu_tanh_fast(out + b, inp + b, std::min(kBlock, n - b));
}

template void gelu_forward<float>(float*, const float*, int64_t, Gelu);
template void gelu_forward<double>(double*, const double*, int64_t, Gelu);
template void gelu_backward<float>(float*, const float*, const float*, int64_t, Gelu);
template void gelu_backward<double>(double*, const double*, const double*, int64_t, Gelu);

}  // namespace hs::cpu
