// HS_HD marks a function shared by host and device code: compiled for both under nvcc, a plain
// inline function otherwise. The numerics that both devices must agree on are written once this
// way (online softmax, ALiBi scores, GELU, the qkv layout).
#pragma once

#include <cmath>

#ifdef __CUDACC__
#define HS_HD __host__ __device__ __forceinline__
#else
#define HS_HD inline
#endif

// The math functions such shared code calls: std:: on the host (float overloads for float), the
// CUDA math library on the device.
namespace hs::hdmath {
#ifdef __CUDA_ARCH__
HS_HD float tanh(float x) { return tanhf(x); }
HS_HD float erf(float x) { return erff(x); }
HS_HD float exp(float x) { return expf(x); }
HS_HD float sqrt(float x) { return sqrtf(x); }
HS_HD double tanh(double x) { return ::tanh(x); }
HS_HD double erf(double x) { return ::erf(x); }
HS_HD double exp(double x) { return ::exp(x); }
HS_HD double sqrt(double x) { return ::sqrt(x); }
#else
using std::erf;
using std::exp;
using std::sqrt;
using std::tanh;
#endif
}  // namespace hs::hdmath
