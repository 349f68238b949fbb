// GELU in its two forms, as one scalar function each for host and device code:
//   tanh (BLOOM):         0.5·x·(1 + tanh(sqrt(2/π)·x·(1 + 0.044715·x²)))
//   erf (MPT, Falcon):    0.5·x·(1 + erf(x/√2))
#pragma once

#include <cmath>
#include <cstdint>

#include "util/hd.h"

namespace hs {

enum class Gelu : uint8_t { tanh, erf };

namespace gelu_detail {
constexpr double kS = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kC = 0.044715;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327;
}  // namespace gelu_detail

template <class T>
HS_HD T gelu(T x, Gelu kind) {
  using namespace gelu_detail;
  using hdmath::erf, hdmath::exp, hdmath::tanh;
  if (kind == Gelu::erf) return T(0.5) * x * (T(1) + erf(x * T(kInvSqrt2)));
  return T(0.5) * x * (T(1) + tanh(T(kS) * x * (T(1) + T(kC) * x * x)));
}

// d gelu(x) / dx.
template <class T>
HS_HD T gelu_grad(T x, Gelu kind) {
  using namespace gelu_detail;
  using hdmath::erf, hdmath::exp, hdmath::tanh;
  if (kind == Gelu::erf)
    return T(0.5) * (T(1) + erf(x * T(kInvSqrt2))) + x * exp(T(-0.5) * x * x) * T(kInvSqrt2Pi);
  const T th = tanh(T(kS) * x * (T(1) + T(kC) * x * x));
  const T du = T(kS) * (T(1) + T(3 * kC) * x * x);
  return T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * du;
}

}  // namespace hs
