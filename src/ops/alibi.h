// The ALiBi attention score of one query and one key, in each supported family's convention:
// host and device code, so the CPU reference and the CUDA kernels compute the same numbers.
//   BLOOM, MPT:  s = (q·k)·scale + slope·j
//   Falcon-RW:   s = (q·k + bias_j)·scale, bias_j = bf16(bf16(slope)·bf16(j))  (HF computes the
//                bias in bfloat16; slopes of non-power-of-two head counts then round visibly)
//   Falcon-RW as HF transformers 5.x's eager attention computes it (output_attentions=True):
//                s = (q·k + bias_j)·scale + bias_j·scale, the bias counted twice (docs/numerics.md)
// j is the key's position (0 = the first token). Softmax is shift-invariant per row, so slope·j
// is the usual recency penalty -slope·(t - j) up to a constant.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "util/hd.h"

namespace hs {

struct AlibiParams {
  double scale = 0;                // softmax scale; 0 = 1/sqrt(head_dim)
  bool bias_before_scale = false;  // Falcon: the bias is added to q·k before the scale
  bool bf16_bias = false;          // Falcon (HF): the bias is computed in bfloat16
  bool hf_eager_twice = false;     // Falcon: HF 5.x eager's second bias (compatibility only)
};

// Round to the nearest bfloat16 (ties to even), kept as a float.
HS_HD float bf16_round(float x) {
  uint32_t u;
#ifdef __CUDA_ARCH__
  u = __float_as_uint(x);
#else
  std::memcpy(&u, &x, 4);
#endif
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  std::memcpy(&x, &u, 4);
  return x;
#endif
}

// The softmax scale for head dimension hd, computed in T as the reference always has.
template <class T>
HS_HD T alibi_scale(const AlibiParams& a, int64_t hd) {
  return a.scale > 0 ? T(a.scale) : T(1) / hdmath::sqrt(T(hd));
}

template <class T>
HS_HD T alibi_score(T dot, T scale, float slope, int64_t j, const AlibiParams& a) {
  if (!a.bias_before_scale) return dot * scale + T(slope) * T(j);
  const float bias =
      a.bf16_bias ? bf16_round(bf16_round(slope) * bf16_round(float(j))) : slope * float(j);
  const T s = (dot + T(bias)) * scale;
  return a.hf_eager_twice ? s + T(bias) * scale : s;
}

}  // namespace hs
