#include "io/dtype.h"

#include <cmath>

#include "util/error.h"

namespace hs {

std::optional<DType> parse_dtype(std::string_view n) {
  if (n == "F64") return DType::F64;
  if (n == "F32") return DType::F32;
  if (n == "F16") return DType::F16;
  if (n == "BF16") return DType::BF16;
  if (n == "I64") return DType::I64;
  if (n == "I32") return DType::I32;
  if (n == "I16") return DType::I16;
  if (n == "I8") return DType::I8;
  if (n == "U8") return DType::U8;
  if (n == "BOOL") return DType::BOOL;
  return std::nullopt;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F64:
      return "F64";
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::I64:
      return "I64";
    case DType::I32:
      return "I32";
    case DType::I16:
      return "I16";
    case DType::I8:
      return "I8";
    case DType::U8:
      return "U8";
    case DType::BOOL:
      return "BOOL";
  }
  return "?";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16:
      return 2;
    case DType::I8:
    case DType::U8:
    case DType::BOOL:
      return 1;
  }
  return 1;
}

bool is_float(DType t) {
  return t == DType::F64 || t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  // A NaN whose payload sits in the low 16 bits would otherwise become inf.
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);  // nearest even; a carry into the exponent is correct
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0) {
    const float v = float(man) * 0x1p-24f;  // zero or subnormal: man * 2^-24, exact
    return sign ? -v : v;
  }
  const uint32_t u = exp == 31 ? sign | 0x7f800000u | (man << 13)  // inf, NaN (payload kept)
                               : sign | ((exp + 112) << 23) | (man << 13);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00;   // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds past 65504: inf
  if (a < 0x38800000u) {                       // below 2^-14: subnormal or zero
    // Scaling by 2^24 (exact) gives the subnormal's mantissa; nearbyint rounds half to even.
    // 1024 (from just below 2^-14) is the right encoding of the smallest normal.
    float v;
    std::memcpy(&v, &a, 4);
    return uint16_t(sign | uint16_t(std::nearbyint(v * 16777216.0f)));
  }
  const uint32_t r = a + 0xfffu + ((a >> 13) & 1u);  // nearest even on the 13 dropped bits
  return uint16_t(sign | uint16_t((r - 0x38000000u) >> 13));
}

namespace {

// Above this many elements the conversion is worth a thread team.
constexpr size_t kParallelMin = size_t(1) << 16;

template <class F>
void for_each_index(size_t n, F f) {
  if (n > kParallelMin) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) f(i);
  } else {
    for (size_t i = 0; i < n; ++i) f(i);
  }
}

// Mapped tensors need not be aligned to their element size (safetensors headers of old files are
// not padded), so elements are read and written bytewise; compilers turn this into plain moves.
template <class T>
T load(const std::byte* p, size_t i) {
  T v;
  std::memcpy(&v, p + i * sizeof(T), sizeof(T));
  return v;
}

template <class T>
void store(std::byte* p, size_t i, T v) {
  std::memcpy(p + i * sizeof(T), &v, sizeof(T));
}

}  // namespace

void convert_to_f32(DType src, const void* data, size_t n, float* out) {
  if (!is_float(src))
    throw Error(std::string("cannot convert ") + dtype_name(src) + " to floating point");
  if (n == 0) return;
  const auto* p = static_cast<const std::byte*>(data);
  switch (src) {
    case DType::F32:
      std::memcpy(out, p, n * sizeof(float));
      return;
    case DType::BF16:
      for_each_index(n, [&](size_t i) { out[i] = bf16_to_f32(load<uint16_t>(p, i)); });
      return;
    case DType::F16:
      for_each_index(n, [&](size_t i) { out[i] = f16_to_f32(load<uint16_t>(p, i)); });
      return;
    default:  // F64
      for_each_index(n, [&](size_t i) { out[i] = float(load<double>(p, i)); });
      return;
  }
}

void convert_from_f32(const float* in, size_t n, DType dst, void* out) {
  if (!is_float(dst))
    throw Error(std::string("cannot convert floating point to ") + dtype_name(dst));
  if (n == 0) return;
  auto* p = static_cast<std::byte*>(out);
  switch (dst) {
    case DType::F32:
      std::memcpy(p, in, n * sizeof(float));
      return;
    case DType::BF16:
      for_each_index(n, [&](size_t i) { store(p, i, f32_to_bf16(in[i])); });
      return;
    case DType::F16:
      for_each_index(n, [&](size_t i) { store(p, i, f32_to_f16(in[i])); });
      return;
    default:  // F64
      for_each_index(n, [&](size_t i) { store(p, i, double(in[i])); });
      return;
  }
}

}  // namespace hs
