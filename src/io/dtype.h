// Element types of safetensors files and conversions to/from fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace hs {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

// nullopt for names we do not know (the caller names the file in its error).
std::optional<DType> parse_dtype(std::string_view name);
const char* dtype_name(DType t);
size_t dtype_size(DType t);
bool is_float(DType t);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Round to nearest even, NaN kept NaN (as torch does).
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// n elements of a float type (F64/F32/F16/BF16) to fp32. Parallel for large n.
void convert_to_f32(DType src, const void* data, size_t n, float* out);
// n fp32 values to a float type.
void convert_from_f32(const float* in, size_t n, DType dst, void* out);

}  // namespace hs
