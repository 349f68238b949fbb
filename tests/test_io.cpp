// Unit tests of the IO layer: fp16/bf16 conversions, the safetensors reader (every malformed
// header must be an hs::Error naming the file) and writer, checkpoint loading (prefixes, dtypes,
// shards, errors), config.json parsing, and resolution of hub ids in the local Hugging Face cache.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "golden_data.h"
#include "io/dtype.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "util/error.h"
#include "util/files.h"

namespace hs {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Helpers

// Runs f and checks that it throws hs::Error whose one-line message contains every part.
void expect_error_impl(const std::function<void()>& f, const std::vector<std::string>& parts,
                       const char* file, int line) {
  std::string msg;
  try {
    f();
  } catch (const Error& e) {
    msg = e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE_AT(file, line) << "threw a non-hs::Error exception: " << e.what();
    return;
  }
  if (msg.empty()) {
    ADD_FAILURE_AT(file, line) << "did not throw hs::Error";
    return;
  }
  if (msg.find('\n') != std::string::npos)
    ADD_FAILURE_AT(file, line) << "message is not one line: " << msg;
  for (const auto& p : parts)
    if (msg.find(p) == std::string::npos)
      ADD_FAILURE_AT(file, line) << "message lacks \"" << p << "\": " << msg;
}

#define EXPECT_HS_ERROR(expr, ...) \
  expect_error_impl([&] { (void)(expr); }, {__VA_ARGS__}, __FILE__, __LINE__)

float f32_of_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint32_t bits_of_f32(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(f.good()) << p;
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A safetensors file by hand: u64 little-endian header length (the header's own unless given),
// the header, then `data_bytes` bytes of data.
void write_raw(const fs::path& p, const std::string& header, size_t data_bytes,
               std::optional<uint64_t> len = std::nullopt) {
  const uint64_t n = len.value_or(header.size());
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = char((n >> (8 * i)) & 0xff);
  s += header;
  s.append(data_bytes, '\x5a');
  write_file(p, s);
}

// A fresh directory per test, removed afterwards.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    tmp_ = fs::temp_directory_path() /
           ("hs_test_io-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
            info->test_suite_name() + "-" + info->name());
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
  // Names of the entries of a directory, sorted.
  static std::vector<std::string> listing(const fs::path& d) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(d)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  fs::path tmp_;
};

// ---------------------------------------------------------------------------------------------
// dtype

// Reference conversions, independent of the code under test: the nearest representable value
// found by search, ties to the even encoding, overflow to inf at max + half an ulp.
double f16_value(uint16_t h) {  // magnitude; 0x7c00 decodes to 65536 (the "next" value)
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  return e == 0 ? std::ldexp(double(m), -24) : std::ldexp(double(1024 + m), e - 25);
}

uint16_t ref_f32_to_f16(float x) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(double(x));
  if (a >= 65536.0) return sign | 0x7c00;
  uint16_t lo = 0, hi = 0x7c00;  // val(lo) <= a < val(hi)
  while (hi - lo > 1) {
    const uint16_t mid = uint16_t((lo + hi) / 2);
    (f16_value(mid) <= a ? lo : hi) = mid;
  }
  const double d1 = a - f16_value(lo), d2 = f16_value(hi) - a;
  const uint16_t r = d1 < d2 ? lo : d2 < d1 ? hi : (lo % 2 == 0 ? lo : hi);
  return sign | r;
}

uint16_t ref_f32_to_bf16(float x) {
  const uint32_t u = bits_of_f32(x);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000);
  const uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return sign | 0x7f80;  // inf (NaN is not passed here)
  const uint16_t lo = uint16_t(a >> 16), hi = uint16_t(lo + 1);
  const double v = double(f32_of_bits(a));
  const double vlo = double(f32_of_bits(uint32_t(lo) << 16));
  const double vhi = hi == 0x7f80 ? std::ldexp(1.0, 128) : double(f32_of_bits(uint32_t(hi) << 16));
  const double d1 = v - vlo, d2 = vhi - v;
  const uint16_t r = d1 < d2 ? lo : d2 < d1 ? hi : (lo % 2 == 0 ? lo : hi);
  return sign | r;
}

TEST(Dtype, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  // Exact ties: 1 + 2^-8 lies halfway between 1 (even) and 1 + 2^-7 (odd).
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
  // 1 + 3*2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up.
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  EXPECT_EQ(f32_to_bf16(-(1.0f + 0x1p-8f)), 0xbf80);
  EXPECT_EQ(f32_to_bf16(-(1.0f + 3 * 0x1p-8f)), 0xbf82);
  // Just above / below a tie.
  EXPECT_EQ(f32_to_bf16(f32_of_bits(0x3f808001u)), 0x3f81);
  EXPECT_EQ(f32_to_bf16(f32_of_bits(0x3f807fffu)), 0x3f80);
  // Carry into the exponent: the largest mantissa rounds up to the next power of two.
  EXPECT_EQ(f32_to_bf16(f32_of_bits(0x3fffffffu)), 0x4000);
  // Infinities, and FLT_MAX overflows to inf as in torch.
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_TRUE(std::isinf(bf16_to_f32(0x7f80)) && bf16_to_f32(0x7f80) > 0);
  EXPECT_TRUE(std::isinf(bf16_to_f32(0xff80)) && bf16_to_f32(0xff80) < 0);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc040), -3.0f);
  // Subnormals are kept (no flush to zero).
  EXPECT_EQ(f32_to_bf16(f32_of_bits(0x00010000u)), 0x0001);
  EXPECT_EQ(bf16_to_f32(0x0001), f32_of_bits(0x00010000u));
}

TEST(Dtype, Bf16NanStaysNan) {
  // Quiet NaN, signalling NaNs with the payload in the high or only in the low 16 bits (which
  // plain rounding would turn into inf or carry into the sign), negative NaN.
  for (uint32_t u : {0x7fc00000u, 0x7f800001u, 0x7f80ffffu, 0x7fffffffu, 0xffc00000u, 0xff800001u,
                     0x7fa00000u}) {
    const float nan = f32_of_bits(u);
    ASSERT_TRUE(std::isnan(nan));
    EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(nan)))) << std::hex << u;
  }
  EXPECT_TRUE(std::isnan(bf16_to_f32(0x7fc0)));
  EXPECT_TRUE(std::isnan(bf16_to_f32(0x7f81)));
}

TEST(Dtype, Bf16MatchesReference) {
  // Every bf16 value converts back to itself.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_bf16(f), h) << std::hex << h;
  }
  std::mt19937 rng(1);
  for (int i = 0; i < 300000; ++i) {
    uint32_t u = rng();
    if (i % 2) u = (u & 0xffff0000u) | 0x8000u;  // half of them exact ties
    const float f = f32_of_bits(u);
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_bf16(f), ref_f32_to_bf16(f)) << std::hex << u;
  }
}

TEST(Dtype, F16SubnormalsBothWays) {
  const float min_sub = 0x1p-24f, max_sub = 0x1p-14f - 0x1p-24f;
  EXPECT_EQ(f16_to_f32(0x0001), min_sub);
  EXPECT_EQ(f16_to_f32(0x03ff), max_sub);
  EXPECT_EQ(f16_to_f32(0x8001), -min_sub);
  EXPECT_EQ(f16_to_f32(0x0400), 0x1p-14f);  // smallest normal
  EXPECT_EQ(f32_to_f16(min_sub), 0x0001);
  EXPECT_EQ(f32_to_f16(max_sub), 0x03ff);
  EXPECT_EQ(f32_to_f16(-min_sub), 0x8001);
  EXPECT_EQ(f32_to_f16(0x1p-14f), 0x0400);
  EXPECT_EQ(f32_to_f16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_TRUE(std::signbit(f16_to_f32(0x8000)));
  // Ties among subnormals: 2^-25 between 0 and 2^-24 -> 0; 3*2^-25 between 1 and 2 ulps -> 2.
  EXPECT_EQ(f32_to_f16(0x1p-25f), 0x0000);
  EXPECT_EQ(f32_to_f16(3 * 0x1p-25f), 0x0002);
  EXPECT_EQ(f32_to_f16(0x1p-25f * 1.0001f), 0x0001);
  EXPECT_EQ(f32_to_f16(0x1p-26f), 0x0000);
  // Halfway between the largest subnormal (odd) and the smallest normal (even) -> normal.
  EXPECT_EQ(f32_to_f16(0x1p-14f - 0x1p-25f), 0x0400);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

TEST(Dtype, F16RangeTiesAndNan) {
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(std::nextafter(65520.0f, 0.0f)), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // the tie with "65536" goes to the even inf
  EXPECT_EQ(f32_to_f16(-65520.0f), 0xfc00);
  EXPECT_EQ(f32_to_f16(-65519.0f), 0xfbff);
  EXPECT_EQ(f32_to_f16(1e10f), 0x7c00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(f32_to_f16(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)) && f16_to_f32(0x7c00) > 0);
  EXPECT_TRUE(std::isinf(f16_to_f32(0xfc00)) && f16_to_f32(0xfc00) < 0);
  // Normal ties: 1 + 2^-11 between 1 (even) and 1 + 2^-10 (odd) -> 1; 1 + 3*2^-11 -> 1 + 2^-9.
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
  EXPECT_EQ(f32_to_f16(-(1.0f + 3 * 0x1p-11f)), 0xbc02);
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
  EXPECT_EQ(f32_to_f16(2048.0f + 1.0f), 0x6800);  // 2049: tie between 2048 and 2050
  EXPECT_EQ(f32_to_f16(2048.0f + 3.0f), 0x6802);  // 2051: tie between 2050 and 2052
  EXPECT_EQ(f16_to_f32(0x3555), 0x1.554p-2f);
  // NaN stays NaN both ways, whatever its payload.
  for (uint32_t u : {0x7fc00000u, 0x7f800001u, 0xffc00000u, 0x7fffffffu}) {
    const uint16_t h = f32_to_f16(f32_of_bits(u));
    EXPECT_EQ(h & 0x7c00, 0x7c00) << std::hex << u;
    EXPECT_NE(h & 0x03ff, 0) << std::hex << u;
    EXPECT_TRUE(std::isnan(f16_to_f32(h))) << std::hex << u;
  }
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7c01)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0xfe00)));
}

TEST(Dtype, F16MatchesReference) {
  // Every f16 value: decodes to the reference value and converts back to itself.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(uint16_t(h));
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << h;
      continue;
    }
    if ((h & 0x7fff) != 0x7c00) {
      const double ref = (h & 0x8000 ? -1 : 1) * f16_value(uint16_t(h & 0x7fff));
      ASSERT_EQ(double(f), ref) << std::hex << h;
    }
    ASSERT_EQ(f32_to_f16(f), h) << std::hex << h;
  }
  // Random floats, concentrated around the f16 range, and exact ties.
  std::mt19937 rng(2);
  for (int i = 0; i < 300000; ++i) {
    uint32_t u = rng();
    if (i % 3 != 0) u = (u & 0x807fffffu) | ((100u + rng() % 46u) << 23);  // 2^-27 .. 2^18
    if (i % 3 == 2) u = (u & 0xffffe000u) | 0x1000u;  // halfway in the normal f16 range
    const float f = f32_of_bits(u);
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), ref_f32_to_f16(f)) << std::hex << u << " " << f;
  }
}

TEST(Dtype, ParseNamesAndSizes) {
  const std::vector<std::pair<std::string, DType>> all = {
      {"F64", DType::F64}, {"F32", DType::F32},  {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I64", DType::I64}, {"I32", DType::I32},  {"I16", DType::I16}, {"I8", DType::I8},
      {"U8", DType::U8},   {"BOOL", DType::BOOL}};
  const size_t sizes[] = {8, 4, 2, 2, 8, 4, 2, 1, 1, 1};
  for (size_t i = 0; i < all.size(); ++i) {
    const auto& [name, t] = all[i];
    ASSERT_TRUE(parse_dtype(name).has_value()) << name;
    EXPECT_EQ(*parse_dtype(name), t) << name;
    EXPECT_EQ(std::string(dtype_name(t)), name);
    EXPECT_EQ(dtype_size(t), sizes[i]) << name;
    EXPECT_EQ(is_float(t), i < 4) << name;
  }
  for (const char* bad : {"Q4", "f32", "", "F8_E4M3", "BF16 ", "I128", "float32"})
    EXPECT_FALSE(parse_dtype(bad).has_value()) << bad;
}

// Large arrays go through the parallel path; results must equal the scalar conversions, also
// from and to buffers that are not aligned to the element size.
constexpr size_t kBig = 3 * 65536 + 7;

TEST(Dtype, ConvertF32AndF64Large) {
  std::mt19937 rng(3);
  std::normal_distribution<double> nd(0, 100);
  std::vector<float> f(kBig);
  for (auto& v : f) v = float(nd(rng));
  f[5] = std::numeric_limits<float>::infinity();
  f[6] = -0.0f;
  std::vector<float> out(kBig, -1);
  // F32 both ways: identical bits.
  std::vector<std::byte> buf(kBig * 8 + 1);
  convert_from_f32(f.data(), kBig, DType::F32, buf.data() + 1);
  convert_to_f32(DType::F32, buf.data() + 1, kBig, out.data());
  EXPECT_EQ(std::memcmp(out.data(), f.data(), kBig * 4), 0);
  // F64: fp32 -> f64 is exact, back again too.
  convert_from_f32(f.data(), kBig, DType::F64, buf.data() + 1);
  for (size_t i = 0; i < kBig; i += 997) {
    double d;
    std::memcpy(&d, buf.data() + 1 + 8 * i, 8);
    ASSERT_EQ(d, double(f[i])) << i;
  }
  std::fill(out.begin(), out.end(), -1.0f);
  convert_to_f32(DType::F64, buf.data() + 1, kBig, out.data());
  EXPECT_EQ(std::memcmp(out.data(), f.data(), kBig * 4), 0);
  // F64 values that are not floats round to nearest.
  std::vector<double> d(kBig);
  for (auto& v : d) v = nd(rng);
  d[0] = 1e300;
  convert_to_f32(DType::F64, d.data(), kBig, out.data());
  for (size_t i = 0; i < kBig; ++i) ASSERT_EQ(out[i], float(d[i])) << i;
  EXPECT_TRUE(std::isinf(out[0]));
}

TEST(Dtype, ConvertHalfTypesLarge) {
  for (const DType t : {DType::F16, DType::BF16}) {
    SCOPED_TRACE(dtype_name(t));
    const auto to32 = [t](uint16_t h) { return t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h); };
    const auto from32 = [t](float x) { return t == DType::F16 ? f32_to_f16(x) : f32_to_bf16(x); };
    // Every 16-bit pattern, three times over, at an odd address.
    std::vector<std::byte> src(kBig * 2 + 1);
    for (size_t i = 0; i < kBig; ++i) {
      const uint16_t h = uint16_t(i * 40503u);  // a permutation of the patterns, repeated
      std::memcpy(src.data() + 1 + 2 * i, &h, 2);
    }
    std::vector<float> f(kBig);
    convert_to_f32(t, src.data() + 1, kBig, f.data());
    for (size_t i = 0; i < kBig; ++i) {
      const uint16_t h = uint16_t(i * 40503u);
      const float ref = to32(h);
      if (std::isnan(ref))
        ASSERT_TRUE(std::isnan(f[i])) << i;
      else
        ASSERT_EQ(bits_of_f32(f[i]), bits_of_f32(ref)) << i;
    }
    // Back: the same patterns (NaN kept NaN).
    std::vector<std::byte> back(kBig * 2 + 1);
    convert_from_f32(f.data(), kBig, t, back.data() + 1);
    for (size_t i = 0; i < kBig; ++i) {
      uint16_t h;
      std::memcpy(&h, back.data() + 1 + 2 * i, 2);
      if (std::isnan(f[i]))
        ASSERT_TRUE(std::isnan(to32(h))) << i;
      else
        ASSERT_EQ(h, uint16_t(i * 40503u)) << i;
    }
    // Arbitrary floats: equal to the scalar conversion.
    std::mt19937 rng(4);
    std::normal_distribution<float> nd(0, 1000);
    for (auto& v : f) v = nd(rng);
    convert_from_f32(f.data(), kBig, t, back.data());
    for (size_t i = 0; i < kBig; ++i) {
      uint16_t h;
      std::memcpy(&h, back.data() + 2 * i, 2);
      ASSERT_EQ(h, from32(f[i])) << i;
    }
  }
}

TEST(Dtype, ConvertSmallAndIntegerTypes) {
  const float in[3] = {1.5f, -2.25f, 65504.0f};
  uint16_t h[3];
  convert_from_f32(in, 3, DType::F16, h);
  EXPECT_EQ(h[0], 0x3e00);
  EXPECT_EQ(h[1], 0xc080);
  EXPECT_EQ(h[2], 0x7bff);
  float out[3] = {0, 0, 0};
  convert_to_f32(DType::F16, h, 3, out);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(out[i], in[i]);
  convert_to_f32(DType::BF16, h, 0, nullptr);  // n == 0 touches nothing
  int32_t ints[3] = {1, 2, 3};
  for (const DType t : {DType::I64, DType::I32, DType::I16, DType::I8, DType::U8, DType::BOOL}) {
    EXPECT_HS_ERROR(convert_to_f32(t, ints, 1, out), dtype_name(t));
    EXPECT_HS_ERROR(convert_from_f32(in, 1, t, ints), dtype_name(t));
  }
}

// ---------------------------------------------------------------------------------------------
// safetensors

class Safetensors : public TempDirTest {};

TEST_F(Safetensors, RoundTripAllDtypes) {
  const double f64[3] = {1.0 / 3, -1e300, 0};
  const float f32[6] = {1, 2, 3, -4.5f, 1e-40f, std::numeric_limits<float>::infinity()};
  const uint16_t f16[5] = {0x3c00, 0x0001, 0x7bff, 0xfc00, 0x7e00};
  const uint16_t bf16[4] = {0x3f80, 0xbf82, 0x7f80, 0x0001};
  const int64_t i64[3] = {std::numeric_limits<int64_t>::min(), -1,
                          std::numeric_limits<int64_t>::max()};
  const int32_t i32[2] = {-7, 1 << 30};
  const int16_t i16[3] = {-32768, 0, 32767};
  const int8_t i8[5] = {-128, -1, 0, 1, 127};
  const uint8_t u8[3] = {0, 128, 255};
  const uint8_t bools[2] = {0, 1};
  const float scalar = 42.0f;
  const std::vector<TensorToWrite> ts = {
      {"f64", DType::F64, {3}, f64, sizeof f64},
      {"layer.f32", DType::F32, {2, 3}, f32, sizeof f32},
      {"f16", DType::F16, {5}, f16, sizeof f16},
      {"bf16", DType::BF16, {4, 1}, bf16, sizeof bf16},
      {"empty", DType::F32, {0, 4}, nullptr, 0},
      {"i64", DType::I64, {3}, i64, sizeof i64},
      {"i32", DType::I32, {1, 2}, i32, sizeof i32},
      {"i16", DType::I16, {3}, i16, sizeof i16},
      {"i8", DType::I8, {5}, i8, sizeof i8},
      {"u8", DType::U8, {3}, u8, sizeof u8},
      {"bool", DType::BOOL, {2}, bools, sizeof bools},
      {"scalar", DType::F32, {}, &scalar, 4},
      {"empty2", DType::I64, {3, 0}, nullptr, 0},
  };
  const std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"note", "h\xc3\xa9llo \"quoted\""}, {"empty", ""}};
  const std::string path = (tmp_ / "all.safetensors").string();
  write_safetensors(path, ts, meta);
  EXPECT_EQ(listing(tmp_), std::vector<std::string>{"all.safetensors"});  // no temp file left

  // Layout: header length a multiple of 8, data section 8-byte aligned, sizes add up.
  const std::string raw = read_file(path);
  ASSERT_GE(raw.size(), 8u);
  uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i) hlen |= uint64_t(uint8_t(raw[i])) << (8 * i);
  EXPECT_EQ(hlen % 8, 0u);
  EXPECT_EQ((8 + hlen) % 8, 0u);
  size_t total = 0;
  for (const auto& t : ts) total += t.nbytes;
  EXPECT_EQ(raw.size(), 8 + hlen + total);
  const json header = json::parse(raw.substr(8, hlen));
  EXPECT_TRUE(header.is_object());
  EXPECT_EQ(header["f64"]["data_offsets"], json({0, 24}));

  const SafetensorsFile f(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.metadata(), meta);
  EXPECT_EQ(f.tensors().size(), ts.size());
  for (const auto& t : ts) {
    SCOPED_TRACE(t.name);
    const TensorView* v = f.find(t.name);
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(v->name, t.name);
    EXPECT_EQ(v->dtype, t.dtype);
    EXPECT_EQ(v->shape, t.shape);
    EXPECT_EQ(v->nbytes, t.nbytes);
    EXPECT_EQ(v->file, path);
    EXPECT_EQ(size_t(v->numel()) * dtype_size(v->dtype), t.nbytes);
    if (t.nbytes) {
      EXPECT_EQ(std::memcmp(v->data, t.data, t.nbytes), 0);
    }
  }
  EXPECT_EQ(f.find("nope"), nullptr);
  EXPECT_EQ(f.find("__metadata__"), nullptr);
  // The first tensor's data starts right after the header: 8-byte aligned in the mapping.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f.find("f64")->data) % 8, 0u);
  f.release(*f.find("layer.f32"));  // pages dropped, still readable
  EXPECT_EQ(std::memcmp(f.find("layer.f32")->data, f32, sizeof f32), 0);
}

TEST_F(Safetensors, HeaderPaddedForEveryNameLength) {
  const float v[2] = {1.25f, -2};
  for (int len = 1; len <= 9; ++len) {
    const std::string name(size_t(len), 'n');
    std::string path = (tmp_ / "p").string();
    path += std::to_string(len);
    write_safetensors(path, {{name, DType::F32, {2}, v, 8}}, {});
    const std::string raw = read_file(path);
    uint64_t hlen = 0;
    std::memcpy(&hlen, raw.data(), 8);
    EXPECT_EQ(hlen % 8, 0u) << len;
    const SafetensorsFile f(path);
    EXPECT_TRUE(f.metadata().empty());
    ASSERT_NE(f.find(name), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f.find(name)->data) % 8, 0u) << len;
    EXPECT_EQ(std::memcmp(f.find(name)->data, v, 8), 0);
  }
}

TEST_F(Safetensors, StreamingWriterAppendsInPieces) {
  const std::string path = (tmp_ / "w.safetensors").string();
  const float a[4] = {1, 2, 3, 4};
  const int64_t b[2] = {-5, 6};
  {
    SafetensorsWriter w(path, {{"a", DType::F32, {2, 2}}, {"b", DType::I64, {2}}});
    w.append(a, 6);
    w.append(reinterpret_cast<const char*>(a) + 6, 10);
    w.append(b, 16);
    EXPECT_FALSE(fs::exists(path));  // not in place before commit
    w.commit();
    EXPECT_HS_ERROR(w.commit(), path);
    EXPECT_HS_ERROR(w.append(a, 4), path);
  }
  const SafetensorsFile f(path);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(std::memcmp(f.find("a")->data, a, 16), 0);
  EXPECT_EQ(std::memcmp(f.find("b")->data, b, 16), 0);
  EXPECT_EQ(listing(tmp_), std::vector<std::string>{"w.safetensors"});
}

TEST_F(Safetensors, WriterWithoutCommitLeavesNothing) {
  const std::string path = (tmp_ / "new.safetensors").string();
  const float a[4] = {1, 2, 3, 4};
  {
    SafetensorsWriter w(path, {{"a", DType::F32, {4}}});
    w.append(a, 16);  // complete, but never committed
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(listing(tmp_).empty());

  // An existing target is left exactly as it was.
  const std::string old = (tmp_ / "old.safetensors").string();
  write_file(old, "previous contents");
  {
    SafetensorsWriter w(old, {{"a", DType::F32, {4}}});
    w.append(a, 8);
    EXPECT_EQ(read_file(old), "previous contents");
  }
  EXPECT_EQ(read_file(old), "previous contents");
  EXPECT_EQ(listing(tmp_), std::vector<std::string>{"old.safetensors"});
}

TEST_F(Safetensors, WriterRejectsWrongAmountsOfData) {
  const std::string path = (tmp_ / "x.safetensors").string();
  const float a[5] = {1, 2, 3, 4, 5};
  {
    SafetensorsWriter w(path, {{"a", DType::F32, {4}}});
    w.append(a, 12);
    EXPECT_HS_ERROR(w.append(a, 8), path);  // 20 > 16
    w.append(a, 4);                         // exactly the rest is still fine
    EXPECT_HS_ERROR(w.append(a, 1), path);
  }
  EXPECT_TRUE(listing(tmp_).empty());
  {
    SafetensorsWriter w(path, {{"a", DType::F32, {4}}});
    w.append(a, 12);
    EXPECT_HS_ERROR(w.commit(), path, "12", "16");
  }
  EXPECT_TRUE(listing(tmp_).empty());
  // write_safetensors checks each tensor's byte count first.
  EXPECT_HS_ERROR(write_safetensors(path, {{"a", DType::F32, {4}, a, 20}}), path, "'a'");
  EXPECT_HS_ERROR(write_safetensors(path, {{"a", DType::F32, {4}, a, 12}}), path, "'a'");
  EXPECT_HS_ERROR(
      write_safetensors(path, {{"a", DType::F32, {1}, a, 4}, {"a", DType::F32, {1}, a, 4}}), path,
      "'a'");
  EXPECT_HS_ERROR(write_safetensors(path, {{"__metadata__", DType::F32, {1}, a, 4}}), path);
  EXPECT_HS_ERROR(write_safetensors(path, {{"neg", DType::F32, {-1}, a, 0}}), path, "'neg'");
  EXPECT_HS_ERROR(write_safetensors(path, {{"bad\xff", DType::F32, {1}, a, 4}}), path, "UTF-8");
  EXPECT_HS_ERROR(write_safetensors(path, {{"a", DType::F32, {1}, a, 4}}, {{"k", "\xc3("}}), path,
                  "UTF-8");
  EXPECT_TRUE(listing(tmp_).empty());
}

// A valid hand-built file first, so that the malformed cases below fail for their one reason.
TEST_F(Safetensors, HandBuiltValidFileParses) {
  const fs::path p = tmp_ / "ok.safetensors";
  write_raw(
      p,
      R"({"__metadata__": {"k": "v"}, "a": {"dtype": "F32", "shape": [2], )"
      R"("data_offsets": [0, 8]}, "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]},)"
      R"( "z": {"dtype": "F64", "shape": [0, 3], "data_offsets": [4, 4]}}   )",
      12);
  const SafetensorsFile f(p.string());
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata().at("k"), "v");
  EXPECT_EQ(f.find("b")->nbytes, 4u);
  EXPECT_EQ(f.find("b")->data - f.find("a")->data, 8);
  EXPECT_EQ(f.find("z")->nbytes, 0u);  // empty tensor inside another's span is no overlap
  // Unaligned header length (old files) is accepted too.
  const fs::path q = tmp_ / "unaligned.safetensors";
  write_raw(q, R"({"a":{"dtype":"I8","shape":[3],"data_offsets":[0,3]}})", 3);
  const SafetensorsFile g(q.string());
  EXPECT_EQ(g.find("a")->nbytes, 3u);
  // Only a header, no tensors.
  const fs::path r = tmp_ / "empty.safetensors";
  write_raw(r, "{}", 0);
  EXPECT_TRUE(SafetensorsFile(r.string()).tensors().empty());
}

TEST_F(Safetensors, MalformedFilesThrowNamingThePath) {
  const std::string p = (tmp_ / "bad.safetensors").string();
  // `a` with the given fields, in a header of its own.
  const auto one = [&](const std::string& fields, size_t data = 16) {
    write_raw(p, R"({"a": {)" + fields + "}}", data);
  };
  const std::string f32x2 = R"("dtype": "F32", "shape": [2], )";

  write_file(p, std::string("\x08\0\0\0", 4));  // 4 bytes
  EXPECT_HS_ERROR(SafetensorsFile(p), p);
  write_file(p, "");
  EXPECT_HS_ERROR(SafetensorsFile(p), p);
  write_file(p, std::string(7, '\0'));
  EXPECT_HS_ERROR(SafetensorsFile(p), p);
  write_raw(p, "{}", 0, 1000);  // header length beyond the file
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "1000");
  write_raw(p, "{}", 0, 3);  // one byte too many
  EXPECT_HS_ERROR(SafetensorsFile(p), p);
  write_raw(p, "{}", 0, uint64_t(1) << 63);
  EXPECT_HS_ERROR(SafetensorsFile(p), p);
  write_raw(p, "{}", 0, ~uint64_t(0));
  EXPECT_HS_ERROR(SafetensorsFile(p), p);
  write_raw(p, "{not json", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "JSON");
  write_raw(p, "", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p);
  write_raw(p, R"({"a": 1} trailing)", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p);
  write_raw(p, "[1, 2]", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "object");
  write_raw(p, "[]", 0);  // no entries to complain about: only the top-level check catches it
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "object");
  write_raw(p, "\"str\"", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p);
  write_raw(p, R"({"a": 5})", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'", "not an object");
  write_raw(p, R"({"a": [1, 2]})", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'");

  one(R"("shape": [2], "data_offsets": [0, 8])");
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'", "dtype");
  one(R"("dtype": 4, "shape": [2], "data_offsets": [0, 8])");
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'", "dtype");
  one(R"("dtype": "Q4", "shape": [2], "data_offsets": [0, 8])");
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'", "Q4");
  one(R"("dtype": "f32", "shape": [2], "data_offsets": [0, 8])");
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "f32");

  for (const char* shape : {"[-1]", "[2, -1]", "[1.5]", "[2.0]", "[\"2\"]", "[null]", "[[2]]", "2",
                            "{}", "null", "[99999999999999999999]", "[-0.0]"}) {
    SCOPED_TRACE(shape);
    one(std::string(R"("dtype": "F32", "shape": )") + shape + R"(, "data_offsets": [0, 8])");
    EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'");
  }
  one(R"("dtype": "F32", "data_offsets": [0, 8])");  // shape missing
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'", "shape");
  // Shapes whose byte size overflows.
  one(R"("dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8])");
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'");
  one(R"("dtype": "F32", "shape": [9223372036854775807], "data_offsets": [0, 8])");
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'");

  for (const char* off : {"", R"(, "data_offsets": [0])", R"(, "data_offsets": [0, 8, 8])",
                          R"(, "data_offsets": [])", R"(, "data_offsets": "0, 8")",
                          R"(, "data_offsets": [-8, 0])", R"(, "data_offsets": [0, 8.0])",
                          R"(, "data_offsets": {"0": 8})", R"(, "data_offsets": [0, null])"}) {
    SCOPED_TRACE(off);
    one(std::string(R"("dtype": "F32", "shape": [2])") + off);
    EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'", "data_offsets");
  }
  one(f32x2 + R"("data_offsets": [8, 0])");  // begin > end
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'");
  one(f32x2 + R"("data_offsets": [12, 20])");  // end past the 16 data bytes
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'", "20");
  one(f32x2 + R"("data_offsets": [18446744073709551608, 18446744073709551615])");
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'");
  one(f32x2 + R"("data_offsets": [0, 4])");  // 8 bytes needed, 4 given
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'", "[2]");
  one(f32x2 + R"("data_offsets": [0, 12])");
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'", "[2]");
  one(R"("dtype": "F16", "shape": [2], "data_offsets": [0, 8])");  // the dtype's size counts
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'");
  one(R"("dtype": "F32", "shape": [0], "data_offsets": [0, 4])");
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'");

  // Two tensors sharing bytes, in either order in the header, and one inside another.
  const std::string b = R"("b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]})";
  const std::string a = R"("a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})";
  write_raw(p, "{" + a + ", " + b + "}", 16);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'", "'b'", "overlap");
  write_raw(p, "{" + b + ", " + a + "}", 16);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'", "'b'", "overlap");
  write_raw(p,
            R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, )"
            R"("b": {"dtype": "U8", "shape": [2], "data_offsets": [6, 8]}})",
            16);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "overlap");
  write_raw(p,
            R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, )"
            R"("b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
            16);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "overlap");

  write_raw(p, R"({"__metadata__": "pt"})", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "__metadata__");
  write_raw(p, R"({"__metadata__": ["format", "pt"]})", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "__metadata__");
  write_raw(p, R"({"__metadata__": {"format": "pt", "n": 1}})", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "__metadata__", "'n'");
  write_raw(p, R"({"__metadata__": {"x": null}})", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "__metadata__");
  write_raw(p, R"({"__metadata__": {"x": {"y": "z"}}})", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "__metadata__");

  // Invalid UTF-8 in the header.
  write_raw(p, "{\"a\xff\": 3}", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p);
  // A name with a newline still gives a one-line message.
  write_raw(p, "{\"a\\nb\": 3}", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "a?b");

  // Not a file at all.
  EXPECT_HS_ERROR(SafetensorsFile((tmp_ / "missing.safetensors").string()), "missing.safetensors");
  EXPECT_HS_ERROR(SafetensorsFile(tmp_.string()), tmp_.string());
}

TEST_F(Safetensors, TruncatedFileThrows) {
  std::vector<float> v(100);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i);
  const std::string p = (tmp_ / "t.safetensors").string();
  write_safetensors(
      p, {{"x", DType::F32, {10, 10}, v.data(), 400}, {"y", DType::F32, {2}, v.data(), 8}});
  const auto full = fs::file_size(p);
  EXPECT_EQ(SafetensorsFile(p).tensors().size(), 2u);
  for (const uintmax_t cut : {uintmax_t(1), uintmax_t(8), uintmax_t(300), full - 9, full - 7}) {
    SCOPED_TRACE(cut);
    write_safetensors(
        p, {{"x", DType::F32, {10, 10}, v.data(), 400}, {"y", DType::F32, {2}, v.data(), 8}});
    fs::resize_file(p, full - cut);
    EXPECT_HS_ERROR(SafetensorsFile(p), p);
  }
}

TEST_F(Safetensors, AbsurdHeaderLengthRejectedBeforeParsing) {
  // A (sparse) file big enough to hold the 101 MB header it announces.
  const std::string p = (tmp_ / "big.safetensors").string();
  write_raw(p, "{}", 0, uint64_t(101) << 20);
  fs::resize_file(p, (uintmax_t(101) << 20) + 8);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "absurd");
}

TEST_F(Safetensors, SizeOverflowAndReversedOffsets) {
  const std::string p = (tmp_ / "bad.safetensors").string();
  // Byte sizes that wrap around to exactly the (empty) span given: 2^62 * 4 and 2^32 * 2^32.
  write_raw(p, R"({"a": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 0]}})",
            0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'", "too large");
  write_raw(
      p, R"({"a": {"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", 0);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'", "too large");
  // Reversed offsets are reported as such, not as a size mismatch.
  write_raw(p, R"({"a": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}})", 8);
  EXPECT_HS_ERROR(SafetensorsFile(p), p, "'a'", "begin 4 > end 0");
}

long resident_bytes() {
  std::ifstream f("/proc/self/statm");
  long size = 0, pages = 0;
  f >> size >> pages;
  return pages * ::sysconf(_SC_PAGESIZE);
}

TEST_F(Safetensors, ReleaseDropsResidentPages) {
  constexpr size_t kBytes = size_t(32) << 20;
  std::vector<uint8_t> data(kBytes);
  for (size_t i = 0; i < kBytes; ++i) data[i] = uint8_t(i * 7 + 1);
  const std::string p = (tmp_ / "big.safetensors").string();
  // "head" makes "big" start mid-page.
  write_safetensors(p, {{"head", DType::U8, {3}, data.data(), 3},
                        {"big", DType::U8, {int64_t(kBytes)}, data.data(), kBytes}});
  const SafetensorsFile f(p);
  const TensorView& t = *f.find("big");
  const auto checksum = [&] {
    uint64_t s = 0;
    for (size_t i = 0; i < t.nbytes; i += 512) s += uint64_t(t.data[i]) * i;
    return s;
  };
  const uint64_t before = checksum();  // faults every page in
  const long mapped = resident_bytes();
  f.release(t);
  const long released = resident_bytes();
  EXPECT_GT(mapped - released, long(kBytes) * 3 / 4) << mapped << " -> " << released;
  EXPECT_EQ(checksum(), before);  // faulted in again from the file
  EXPECT_EQ(std::memcmp(f.find("head")->data, data.data(), 3), 0);

  // A view outside this file's mapping is left alone: no madvise on foreign memory, which
  // would zero it.
  std::vector<std::byte> heap(size_t(1) << 20, std::byte{0xab});
  TensorView foreign;
  foreign.data = heap.data();
  foreign.nbytes = heap.size();
  f.release(foreign);
  EXPECT_TRUE(
      std::all_of(heap.begin(), heap.end(), [](std::byte b) { return b == std::byte{0xab}; }));
}

TEST(SafetensorsStrings, ShapeStrAndPrintable) {
  EXPECT_EQ(shape_str({}), "[]");
  EXPECT_EQ(shape_str({3, 4}), "[3, 4]");
  EXPECT_EQ(printable("a\nb\x7f\tc"), "a?b??c");
  EXPECT_EQ(printable("h\xc3\xa9"), "h\xc3\xa9");
}

// ---------------------------------------------------------------------------------------------
// checkpoint

const std::string kTiny8 = std::string(HS_TEST_DATA) + "/golden/models/tiny8";

struct Tensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

// Every tensor of a file, copied out, in the file's (sorted) order.
std::vector<Tensor> read_all(const std::string& path) {
  const SafetensorsFile f(path);
  std::vector<Tensor> out;
  for (const auto& [name, v] : f.tensors())
    out.push_back({name, v.dtype, v.shape, std::vector<std::byte>(v.data, v.data + v.nbytes)});
  return out;
}

void write_all(const fs::path& path, const std::vector<Tensor>& ts) {
  std::vector<TensorToWrite> w;
  for (const auto& t : ts) w.push_back({t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size()});
  write_safetensors(path.string(), w);
}

std::vector<float> as_f32(const TensorView& v) {
  std::vector<float> out(size_t(v.numel()));
  convert_to_f32(v.dtype, v.data, out.size(), out.data());
  return out;
}

std::vector<float> as_f32(const Tensor& t) {
  std::vector<float> out(t.bytes.size() / dtype_size(t.dtype));
  convert_to_f32(t.dtype, t.bytes.data(), out.size(), out.data());
  return out;
}

std::string strip_prefix(const std::string& n) {
  return n.starts_with("transformer.") ? n.substr(12) : n;
}

class CheckpointTest : public TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    orig_ = read_all(kTiny8 + "/model.safetensors");
  }
  // A model directory with tiny8's config and the given tensors in model.safetensors.
  fs::path model(const std::string& name, const std::vector<Tensor>& ts) {
    const fs::path d = tmp_ / name;
    fs::create_directories(d);
    fs::copy_file(kTiny8 + "/config.json", d / "config.json");
    write_all(d / "model.safetensors", ts);
    return d;
  }
  std::vector<Tensor> without(const std::string& name) const {
    std::vector<Tensor> ts;
    for (const auto& t : orig_)
      if (t.name != name) ts.push_back(t);
    return ts;
  }
  Tensor& find(std::vector<Tensor>& ts, const std::string& name) {
    for (auto& t : ts)
      if (t.name == name) return t;
    throw std::runtime_error("no tensor " + name);
  }
  std::vector<Tensor> orig_;
};

TEST_F(CheckpointTest, LoadsTiny8) {
  ASSERT_EQ(orig_.size(), 41u);
  const Checkpoint ck(kTiny8);
  EXPECT_EQ(ck.dir(), kTiny8);
  EXPECT_EQ(ck.config().n_layer, 3);
  EXPECT_EQ(ck.config().hidden, 64);
  EXPECT_EQ(ck.config().n_head, 8);
  EXPECT_EQ(ck.config().vocab, 8192);
  EXPECT_EQ(ck.config().head_dim(), 8);
  EXPECT_EQ(ck.config_json().at("model_type"), "bloom");
  EXPECT_EQ(ck.weight_dtype(), DType::F32);
  EXPECT_EQ(ck.tokenizer_path(), kTiny8 + "/tokenizer.json");
  const auto names = ck.tensor_names();
  EXPECT_EQ(names.size(), 41u);
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  for (const auto& n : names) EXPECT_FALSE(n.starts_with("transformer.")) << n;
  EXPECT_TRUE(ck.has("word_embeddings.weight"));
  EXPECT_TRUE(ck.has("h.2.mlp.dense_4h_to_h.bias"));
  EXPECT_FALSE(ck.has("transformer.ln_f.weight"));
  EXPECT_FALSE(ck.has("h.3.input_layernorm.weight"));
  EXPECT_EQ(ck.tensor("word_embeddings.weight").shape, (std::vector<int64_t>{8192, 64}));
  EXPECT_EQ(ck.tensor("h.1.self_attention.query_key_value.weight").shape,
            (std::vector<int64_t>{192, 64}));
  EXPECT_EQ(ck.tensor("h.1.mlp.dense_4h_to_h.weight").shape, (std::vector<int64_t>{64, 256}));
  EXPECT_EQ(ck.tensor("ln_f.bias").file, kTiny8 + "/model.safetensors");
  EXPECT_HS_ERROR(ck.tensor("h.9.nothing"), "h.9.nothing");
  for (const auto& t : orig_) {
    const TensorView& v = ck.tensor(strip_prefix(t.name));
    ASSERT_EQ(v.nbytes, t.bytes.size()) << t.name;
    EXPECT_EQ(std::memcmp(v.data, t.bytes.data(), v.nbytes), 0) << t.name;
  }
  // Released pages come back from the file.
  const TensorView& we = ck.tensor("word_embeddings.weight");
  ck.release(we);
  EXPECT_EQ(std::memcmp(we.data, find(orig_, "transformer.word_embeddings.weight").bytes.data(),
                        we.nbytes),
            0);
}

TEST_F(CheckpointTest, Bf16WithoutPrefixAndLmHead) {
  std::vector<Tensor> ts;
  for (const auto& t : orig_) {
    const auto f = as_f32(t);
    Tensor b{strip_prefix(t.name), DType::BF16, t.shape, std::vector<std::byte>(f.size() * 2)};
    convert_from_f32(f.data(), f.size(), DType::BF16, b.bytes.data());
    ts.push_back(std::move(b));
  }
  Tensor lm = ts.back();  // any bytes: the tied head is ignored
  lm.name = "lm_head.weight";
  ts.push_back(lm);
  const fs::path d = model("bf16", ts);
  const Checkpoint ck(d.string());
  EXPECT_EQ(ck.weight_dtype(), DType::BF16);
  EXPECT_FALSE(ck.has("lm_head.weight"));
  EXPECT_EQ(ck.tensor_names().size(), 41u);
  for (const auto& t : orig_) {
    SCOPED_TRACE(t.name);
    const TensorView& v = ck.tensor(strip_prefix(t.name));
    EXPECT_EQ(v.dtype, DType::BF16);
    EXPECT_EQ(v.shape, t.shape);
    const auto want = as_f32(t), got = as_f32(v);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_LE(std::fabs(got[i] - want[i]), std::fabs(want[i]) * 0x1p-8f) << i;
      ASSERT_EQ(got[i], bf16_to_f32(f32_to_bf16(want[i]))) << i;
    }
  }
  // With the prefix, lm_head.weight is ignored as well.
  for (auto& t : ts)
    if (t.name != "lm_head.weight") t.name = "transformer." + t.name;
  EXPECT_EQ(Checkpoint(model("bf16p", ts).string()).tensor_names().size(), 41u);
}

TEST_F(CheckpointTest, TwoShardsWithIndex) {
  const fs::path d = tmp_ / "sharded";
  fs::create_directories(d);
  fs::copy_file(kTiny8 + "/config.json", d / "config.json");
  std::vector<Tensor> s1, s2;
  json wm = json::object();
  for (size_t i = 0; i < orig_.size(); ++i) {
    const bool first = i % 2 == 0;
    (first ? s1 : s2).push_back(orig_[i]);
    wm[orig_[i].name] =
        first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  write_all(d / "model-00001-of-00002.safetensors", s1);
  write_all(d / "model-00002-of-00002.safetensors", s2);
  write_file(d / "model.safetensors.index.json",
             json{{"metadata", {{"total_size", 123}}}, {"weight_map", wm}}.dump(2));
  const Checkpoint ck(d.string());
  EXPECT_EQ(ck.weight_dtype(), DType::F32);
  EXPECT_EQ(ck.tensor_names().size(), 41u);
  for (size_t i = 0; i < orig_.size(); ++i) {
    const auto& t = orig_[i];
    const TensorView& v = ck.tensor(strip_prefix(t.name));
    EXPECT_EQ(v.file, (d / wm[t.name].get<std::string>()).string()) << t.name;
    ASSERT_EQ(v.nbytes, t.bytes.size()) << t.name;
    EXPECT_EQ(std::memcmp(v.data, t.bytes.data(), v.nbytes), 0) << t.name;
    ck.release(v);
    EXPECT_EQ(std::memcmp(v.data, t.bytes.data(), v.nbytes), 0) << t.name;
  }

  // A shard that does not exist.
  json bad = wm;
  bad["transformer.ln_f.bias"] = "model-00003-of-00002.safetensors";
  write_file(d / "model.safetensors.index.json", json{{"weight_map", bad}}.dump());
  EXPECT_HS_ERROR(Checkpoint(d.string()), "model.safetensors.index.json",
                  "model-00003-of-00002.safetensors");
  // A tensor listed in a shard that does not hold it (s1's tensors are all in the first).
  bad = wm;
  bad[s1[3].name] = "model-00002-of-00002.safetensors";
  write_file(d / "model.safetensors.index.json", json{{"weight_map", bad}}.dump());
  EXPECT_HS_ERROR(Checkpoint(d.string()), strip_prefix(s1[3].name),
                  "model-00002-of-00002.safetensors");
  // Shard names that leave the directory, non-string entries, no weight_map.
  bad = wm;
  bad["transformer.ln_f.bias"] = "../x.safetensors";
  write_file(d / "model.safetensors.index.json", json{{"weight_map", bad}}.dump());
  EXPECT_HS_ERROR(Checkpoint(d.string()), "model.safetensors.index.json", "ln_f.bias");
  bad["transformer.ln_f.bias"] = 3;
  write_file(d / "model.safetensors.index.json", json{{"weight_map", bad}}.dump());
  EXPECT_HS_ERROR(Checkpoint(d.string()), "model.safetensors.index.json", "ln_f.bias");
  write_file(d / "model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_HS_ERROR(Checkpoint(d.string()), "model.safetensors.index.json", "weight_map");
  write_file(d / "model.safetensors.index.json", R"({"weight_map": {}})");
  EXPECT_HS_ERROR(Checkpoint(d.string()), "model.safetensors.index.json");
  write_file(d / "model.safetensors.index.json", "[1]");
  EXPECT_HS_ERROR(Checkpoint(d.string()), "model.safetensors.index.json");
  write_file(d / "model.safetensors.index.json", "{oops");
  EXPECT_HS_ERROR(Checkpoint(d.string()), "model.safetensors.index.json");
  // Only the first shard listed: the second shard's tensors are missing.
  json half = json::object();
  for (const auto& t : s1) half[t.name] = "model-00001-of-00002.safetensors";
  write_file(d / "model.safetensors.index.json", json{{"weight_map", half}}.dump());
  EXPECT_HS_ERROR(Checkpoint(d.string()), "model.safetensors.index.json", "missing tensor");
}

TEST_F(CheckpointTest, MissingTensorNamesFileAndTensor) {
  const fs::path d = model("missing", without("transformer.h.1.mlp.dense_h_to_4h.bias"));
  EXPECT_HS_ERROR(Checkpoint(d.string()), (d / "model.safetensors").string(),
                  "h.1.mlp.dense_h_to_4h.bias");
  const fs::path e = model("missing2", without("transformer.word_embeddings.weight"));
  EXPECT_HS_ERROR(Checkpoint(e.string()), (e / "model.safetensors").string(),
                  "word_embeddings.weight");
  // A config promising a fourth layer.
  json cfg = json::parse(read_file(kTiny8 + "/config.json"));
  cfg["n_layer"] = 4;
  const fs::path g = model("fourth", orig_);
  write_file(g / "config.json", cfg.dump());
  EXPECT_HS_ERROR(Checkpoint(g.string()), (g / "model.safetensors").string(),
                  "h.3.input_layernorm");
}

TEST_F(CheckpointTest, WrongShapeNamesBothShapes) {
  auto ts = orig_;
  Tensor& q = find(ts, "transformer.h.2.self_attention.query_key_value.weight");
  q.shape = {64, 192};
  const fs::path d = model("shape", ts);
  EXPECT_HS_ERROR(Checkpoint(d.string()), (d / "model.safetensors").string(),
                  "h.2.self_attention.query_key_value.weight", "[64, 192]", "[192, 64]");
  ts = orig_;
  Tensor& ln = find(ts, "transformer.ln_f.bias");
  ln.shape = {1, 64};
  const fs::path e = model("shape2", ts);
  EXPECT_HS_ERROR(Checkpoint(e.string()), "ln_f.bias", "[1, 64]", "[64]");
  // A config whose vocabulary disagrees with the embedding.
  json cfg = json::parse(read_file(kTiny8 + "/config.json"));
  cfg["vocab_size"] = 8000;
  const fs::path g = model("vocab", orig_);
  write_file(g / "config.json", cfg.dump());
  EXPECT_HS_ERROR(Checkpoint(g.string()), "word_embeddings.weight", "[8192, 64]", "[8000, 64]");
}

TEST_F(CheckpointTest, IntegerWeightRejected) {
  for (const DType t : {DType::I32, DType::U8}) {
    auto ts = orig_;
    Tensor& b = find(ts, "transformer.h.0.self_attention.dense.bias");
    b.dtype = t;
    b.bytes.resize(64 * dtype_size(t));
    const fs::path d = model(std::string("int") + dtype_name(t), ts);
    EXPECT_HS_ERROR(Checkpoint(d.string()), (d / "model.safetensors").string(),
                    "h.0.self_attention.dense.bias", dtype_name(t));
  }
}

TEST_F(CheckpointTest, DuplicateWithAndWithoutPrefix) {
  auto ts = orig_;
  Tensor dup = find(ts, "transformer.ln_f.bias");
  dup.name = "ln_f.bias";
  ts.push_back(dup);
  const fs::path d = model("dup", ts);
  EXPECT_HS_ERROR(Checkpoint(d.string()), "ln_f.bias");
}

TEST_F(CheckpointTest, DirectoryErrors) {
  // Neither model.safetensors nor an index.
  const fs::path d = tmp_ / "noweights";
  fs::create_directories(d);
  fs::copy_file(kTiny8 + "/config.json", d / "config.json");
  EXPECT_HS_ERROR(Checkpoint(d.string()), d.string(), "model.safetensors");
  // No config.json.
  const fs::path e = tmp_ / "noconfig";
  fs::create_directories(e);
  write_all(e / "model.safetensors", orig_);
  EXPECT_HS_ERROR(Checkpoint(e.string()), e.string(), "config.json");
  EXPECT_HS_ERROR(resolve_model_dir(e.string()), e.string(), "config.json");
  // config.json not JSON, or not a BLOOM config.
  write_file(e / "config.json", "{\"n_head\": ");
  EXPECT_HS_ERROR(Checkpoint(e.string()), (e / "config.json").string());
  write_file(e / "config.json", R"({"model_type": "gpt2"})");
  EXPECT_HS_ERROR(Checkpoint(e.string()), (e / "config.json").string(), "gpt2");
  // A corrupt weights file.
  write_file(e / "config.json", read_file(kTiny8 + "/config.json"));
  fs::resize_file(e / "model.safetensors", 1000);
  EXPECT_HS_ERROR(Checkpoint(e.string()), (e / "model.safetensors").string());
  EXPECT_EQ(resolve_model_dir(e.string()), e.string());
}

// ---------------------------------------------------------------------------------------------
// config

ModelConfig parse(const std::string& text) {
  return ModelConfig::from_json(json::parse(text), "cfg.json");
}

TEST(Config, CanonicalKeysAndAliases) {
  const ModelConfig a = parse(
      R"({"model_type": "bloom", "hidden_size": 64, "n_head": 8, "n_layer": 3, "vocab_size": 100})");
  EXPECT_EQ(a.hidden, 64);
  EXPECT_EQ(a.n_head, 8);
  EXPECT_EQ(a.n_layer, 3);
  EXPECT_EQ(a.vocab, 100);
  const ModelConfig b = parse(
      R"({"n_embed": 96, "num_attention_heads": 12, "num_hidden_layers": 5, "vocab_size": 7})");
  EXPECT_EQ(b.hidden, 96);
  EXPECT_EQ(b.n_head, 12);
  EXPECT_EQ(b.n_layer, 5);
  EXPECT_EQ(b.vocab, 7);
  EXPECT_EQ(b.head_dim(), 8);
  EXPECT_EQ(b.ffn, 384);
  // Both spellings present and agreeing is fine; null counts as absent.
  const ModelConfig c =
      parse(R"({"hidden_size": 64, "n_embed": 64, "n_head": null, "num_attention_heads": 4,)"
            R"( "n_layer": 1, "vocab_size": 10})");
  EXPECT_EQ(c.n_head, 4);
  EXPECT_HS_ERROR(
      parse(R"({"hidden_size": 64, "n_embed": 32, "n_head": 4, "n_layer": 1, "vocab_size": 10})"),
      "cfg.json", "hidden_size", "n_embed");
}

TEST(Config, Defaults) {
  const ModelConfig c =
      parse(R"({"hidden_size": 64, "n_head": 8, "n_layer": 3, "vocab_size": 100})");
  EXPECT_EQ(c.ln_eps, 1e-5);
  EXPECT_FALSE(c.post_ln);
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_id, 2);
  EXPECT_EQ(c.pad_id, 3);
  EXPECT_EQ(c.unk_id, 0);
  const ModelConfig d = parse(
      R"({"hidden_size": 64, "n_head": 8, "n_layer": 3, "vocab_size": 100, "layer_norm_epsilon": 1e-6,)"
      R"( "apply_residual_connection_post_layernorm": true, "bos_token_id": 5, "eos_token_id": 6,)"
      R"( "pad_token_id": 7, "unk_token_id": 8})");
  EXPECT_EQ(d.ln_eps, 1e-6);
  EXPECT_TRUE(d.post_ln);
  EXPECT_EQ(d.bos_id, 5);
  EXPECT_EQ(d.eos_id, 6);
  EXPECT_EQ(d.pad_id, 7);
  EXPECT_EQ(d.unk_id, 8);
}

TEST(Config, Errors) {
  const std::string rest = R"("n_layer": 3, "vocab_size": 100)";
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 64, )" + rest + "}"), "cfg.json", "'n_head'",
                  "'num_attention_heads'");
  EXPECT_HS_ERROR(parse(R"({"n_head": 8, )" + rest + "}"), "cfg.json", "'hidden_size'",
                  "'n_embed'");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 64, "n_head": 8, "vocab_size": 100})"), "cfg.json",
                  "'n_layer'", "'num_hidden_layers'");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 64, "n_head": 8, "n_layer": 3})"), "cfg.json",
                  "vocab_size");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 64, "n_head": 7, )" + rest + "}"), "cfg.json",
                  "divisible");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 64, "n_head": 128, )" + rest + "}"), "cfg.json",
                  "divisible");
  EXPECT_HS_ERROR(parse(R"({"model_type": "gpt2", "hidden_size": 64, "n_head": 8, )" + rest + "}"),
                  "cfg.json", "gpt2");
  EXPECT_HS_ERROR(parse(R"({"model_type": 3, "hidden_size": 64, "n_head": 8, )" + rest + "}"),
                  "cfg.json", "model_type");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": -64, "n_head": 8, )" + rest + "}"), "cfg.json",
                  "hidden_size");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 64, "n_head": 0, )" + rest + "}"), "cfg.json", "n_head");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 64, "n_head": 8, "n_layer": -1, "vocab_size": 100})"),
                  "cfg.json", "n_layer");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 64, "n_head": 8, "n_layer": 3, "vocab_size": 0})"),
                  "cfg.json", "vocab_size");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 64, "n_head": "8", )" + rest + "}"), "cfg.json",
                  "n_head");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 64.0, "n_head": 8, )" + rest + "}"), "cfg.json",
                  "hidden_size");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 64, "n_head": 8.5, )" + rest + "}"), "cfg.json",
                  "n_head");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 64, "n_head": true, )" + rest + "}"), "cfg.json",
                  "n_head");
  EXPECT_HS_ERROR(
      parse(R"({"hidden_size": 64, "n_head": 8, )" + rest + R"(, "bos_token_id": "1"})"),
      "cfg.json", "bos_token_id");
  EXPECT_HS_ERROR(
      parse(R"({"hidden_size": 64, "n_head": 8, )" + rest + R"(, "layer_norm_epsilon": "1e-5"})"),
      "cfg.json", "layer_norm_epsilon");
  EXPECT_HS_ERROR(
      parse(R"({"hidden_size": 64, "n_head": 8, )" + rest + R"(, "layer_norm_epsilon": -1})"),
      "cfg.json", "layer_norm_epsilon");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 64, "n_head": 8, )" + rest +
                        R"(, "apply_residual_connection_post_layernorm": 1})"),
                  "cfg.json", "apply_residual_connection_post_layernorm");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 18446744073709551615, "n_head": 8, )" + rest + "}"),
                  "cfg.json", "hidden_size");
  EXPECT_HS_ERROR(parse(R"({"hidden_size": 1099511627776, "n_head": 8, )" + rest + "}"), "cfg.json",
                  "hidden_size");
  EXPECT_HS_ERROR(parse("[1, 2]"), "cfg.json");
  EXPECT_HS_ERROR(parse("null"), "cfg.json");
}

TEST(Config, ToJsonRoundTripKeepsUnknownKeys) {
  const json base = json::parse(
      R"({"model_type": "bloom", "n_embed": 64, "num_attention_heads": 8, "num_hidden_layers": 3,)"
      R"( "vocab_size": 100, "layer_norm_epsilon": 1e-6, "bos_token_id": 9,)"
      R"( "apply_residual_connection_post_layernorm": true, "custom_key": {"x": [1, 2]},)"
      R"( "torch_dtype": "bfloat16", "tie_word_embeddings": false})");
  const ModelConfig c = ModelConfig::from_json(base, "base.json");
  const json j = c.to_json(base);
  EXPECT_EQ(j.at("custom_key"), base.at("custom_key"));
  EXPECT_EQ(j.at("torch_dtype"), "bfloat16");
  EXPECT_EQ(j.at("tie_word_embeddings"), false);
  EXPECT_EQ(j.at("model_type"), "bloom");
  EXPECT_EQ(j.at("hidden_size"), 64);
  EXPECT_EQ(j.at("n_head"), 8);
  EXPECT_EQ(j.at("n_layer"), 3);
  EXPECT_FALSE(j.contains("n_embed"));
  EXPECT_FALSE(j.contains("num_attention_heads"));
  EXPECT_FALSE(j.contains("num_hidden_layers"));
  const ModelConfig r = ModelConfig::from_json(j, "out.json");
  EXPECT_EQ(r.hidden, c.hidden);
  EXPECT_EQ(r.n_head, c.n_head);
  EXPECT_EQ(r.n_layer, c.n_layer);
  EXPECT_EQ(r.vocab, c.vocab);
  EXPECT_EQ(r.ln_eps, c.ln_eps);
  EXPECT_EQ(r.post_ln, c.post_ln);
  EXPECT_EQ(r.bos_id, 9);
  EXPECT_EQ(r.eos_id, c.eos_id);
  EXPECT_EQ(r.pad_id, c.pad_id);
  EXPECT_EQ(r.unk_id, c.unk_id);
  // Changed fields win over the base; a stale alias does not survive.
  ModelConfig m = c;
  m.n_layer = 2;
  m.n_head = 4;
  const json k = m.to_json(base);
  EXPECT_EQ(ModelConfig::from_json(k, "k.json").n_layer, 2);
  EXPECT_EQ(ModelConfig::from_json(k, "k.json").n_head, 4);
  // Without a base: a complete config with tied embeddings.
  const json fresh = c.to_json();
  EXPECT_EQ(fresh.at("tie_word_embeddings"), true);
  EXPECT_EQ(fresh.at("architectures"), json({"BloomForCausalLM"}));
  EXPECT_EQ(ModelConfig::from_json(fresh, "f.json").hidden, 64);
  // The real config round-trips too.
  const json tiny = json::parse(read_file(kTiny8 + "/config.json"));
  const json back = ModelConfig::from_json(tiny, "tiny").to_json(tiny);
  for (const auto& [key, value] : tiny.items()) EXPECT_EQ(back.at(key), value) << key;
}

// Every family reads its own keys into one ModelConfig; what headsurgeon does not implement is
// refused in one line naming the key and why.
TEST(Config, MptAndFalconKeys) {
  const ModelConfig m =
      parse(R"({"model_type": "mpt", "d_model": 64, "n_heads": 8, "n_layers": 3,)"
            R"( "vocab_size": 100, "expansion_ratio": 3, "no_bias": false,)"
            R"( "logit_scale": "inv_sqrt_d_model", "attn_config": {"alibi": true,)"
            R"( "alibi_bias_max": 16, "clip_qkv": 6, "softmax_scale": 0.25}})");
  EXPECT_EQ(m.family, Family::mpt);
  EXPECT_EQ(m.ffn, 192);
  EXPECT_TRUE(m.linear_bias && m.norm_bias);
  EXPECT_FALSE(m.emb_norm);
  EXPECT_EQ(m.act, Gelu::erf);
  EXPECT_EQ(m.qkv_layout, QkvLayout::blocked);
  EXPECT_EQ(m.alibi_bias_max, 16);
  EXPECT_EQ(m.clip_qkv, 6);
  EXPECT_EQ(m.alibi.scale, 0.25);
  EXPECT_DOUBLE_EQ(m.logit_scale, 0.125);
  const ModelConfig mpt_defaults =
      parse(R"({"model_type": "mpt", "d_model": 64, "n_heads": 8, "n_layers": 3,)"
            R"( "vocab_size": 100, "attn_config": {"alibi": true}})");
  EXPECT_FALSE(mpt_defaults.linear_bias || mpt_defaults.norm_bias);  // no_bias defaults to true
  EXPECT_EQ(mpt_defaults.ffn, 256);
  EXPECT_EQ(mpt_defaults.logit_scale, 1);
  const ModelConfig f = parse(R"({"model_type": "falcon", "hidden_size": 64, "n_head": 8,)"
                              R"( "num_hidden_layers": 2, "vocab_size": 100, "alibi": true,)"
                              R"( "bias": true, "multi_query": false, "parallel_attn": false,)"
                              R"( "tie_word_embeddings": false, "ffn_hidden_size": 96})");
  EXPECT_EQ(f.family, Family::falcon);
  EXPECT_EQ(f.n_head, 8);
  EXPECT_EQ(f.ffn, 96);
  EXPECT_TRUE(f.alibi.bias_before_scale && f.alibi.bf16_bias);
  EXPECT_FALSE(f.tied_head);
  EXPECT_FALSE(f.emb_norm);
  EXPECT_EQ(f.act, Gelu::erf);
  // Written back, each family's config reads to the same description.
  for (const ModelConfig& c : {m, f}) {
    const ModelConfig r = ModelConfig::from_json(c.to_json(), "back.json");
    EXPECT_EQ(r.family, c.family);
    EXPECT_EQ(r.hidden, c.hidden);
    EXPECT_EQ(r.ffn, c.ffn);
    EXPECT_EQ(r.linear_bias, c.linear_bias);
    EXPECT_EQ(r.clip_qkv, c.clip_qkv);
    EXPECT_EQ(r.alibi.scale, c.alibi.scale);
    EXPECT_EQ(r.alibi_bias_max, c.alibi_bias_max);
    EXPECT_DOUBLE_EQ(r.logit_scale, c.logit_scale);
    EXPECT_EQ(r.tied_head, c.tied_head);
  }
}

TEST(Config, UnsupportedVariantsAreRefusedByName) {
  const std::string mpt = R"({"model_type": "mpt", "d_model": 64, "n_heads": 8, "n_layers": 3,)"
                          R"( "vocab_size": 100, )";
  EXPECT_HS_ERROR(parse(mpt + R"("attn_config": {"alibi": false}})"), "cfg.json",
                  "attn_config.alibi");
  EXPECT_HS_ERROR(parse(mpt + R"("attn_config": {}})"), "cfg.json", "attn_config.alibi");
  EXPECT_HS_ERROR(parse(mpt + R"("attn_config": {"alibi": true, "qk_ln": true}})"), "cfg.json",
                  "qk_ln");
  EXPECT_HS_ERROR(parse(mpt + R"("attn_config": {"alibi": true, "kv_n_heads": 2}})"), "cfg.json",
                  "kv_n_heads", "below", "grouped-query");
  EXPECT_HS_ERROR(
      parse(mpt + R"("attn_config": {"alibi": true, "attn_type": "multiquery_attention"}})"),
      "cfg.json", "multiquery_attention");
  EXPECT_HS_ERROR(parse(mpt + R"("norm_type": "rmsnorm", "attn_config": {"alibi": true}})"),
                  "cfg.json", "rmsnorm");
  EXPECT_HS_ERROR(parse(mpt + R"("logit_scale": "huge", "attn_config": {"alibi": true}})"),
                  "cfg.json", "logit_scale");
  EXPECT_HS_ERROR(parse(mpt + R"("attn_config": {"alibi": true, "clip_qkv": -1}})"), "cfg.json",
                  "clip_qkv");
  EXPECT_HS_ERROR(parse(mpt + R"("attn_config": 3})"), "cfg.json", "attn_config");
  const std::string falcon = R"({"model_type": "falcon", "hidden_size": 64, "n_head": 8,)"
                             R"( "n_layer": 2, "vocab_size": 100, )";
  EXPECT_HS_ERROR(
      parse(falcon + R"("alibi": false, "multi_query": false, "parallel_attn": false})"),
      "cfg.json", "alibi", "rotary");
  EXPECT_HS_ERROR(parse(falcon + R"("multi_query": false, "parallel_attn": false})"), "cfg.json",
                  "alibi", "rotary");
  EXPECT_HS_ERROR(parse(falcon + R"("alibi": true, "parallel_attn": false})"), "cfg.json",
                  "multi_query");
  EXPECT_HS_ERROR(parse(falcon + R"("alibi": true, "multi_query": false})"), "cfg.json",
                  "parallel_attn");
  EXPECT_HS_ERROR(parse(falcon + R"("alibi": true, "multi_query": false, "parallel_attn": false,)"
                                 R"( "new_decoder_architecture": true})"),
                  "cfg.json", "new_decoder_architecture");
  EXPECT_HS_ERROR(parse(falcon + R"("alibi": true, "multi_query": false, "parallel_attn": false,)"
                                 R"( "activation": "relu"})"),
                  "cfg.json", "relu");
  EXPECT_HS_ERROR(parse(R"({"model_type": "llama", "hidden_size": 64})"), "cfg.json", "llama",
                  "not supported");
}

// A tensor missing or misshaped in an MPT or Falcon checkpoint: named by its HF name, its role
// and the shape the config implies.
TEST(Config, FamilyTensorErrorsNameTheTensorRoleAndShape) {
  const fs::path tmp = fs::temp_directory_path() / ("hs_famerr_" + std::to_string(::getpid()));
  const std::string mpt8 = std::string(HS_TEST_DATA) + "/golden/models/mpt8";
  const std::string falcon = std::string(HS_TEST_DATA) + "/golden/models/falconrw8";
  test::copy_model_edited(mpt8, tmp / "mpt", [](const std::string&, std::vector<std::byte>&) {});
  SafetensorsFile src((tmp / "mpt" / "model.safetensors").string());
  std::vector<TensorToWrite> keep;
  for (const auto& [name, t] : src.tensors())
    if (name != "transformer.blocks.1.norm_1.weight")
      keep.push_back({name, t.dtype, t.shape, t.data, t.nbytes});
  write_safetensors((tmp / "mpt_missing.safetensors").string(), keep);
  fs::rename(tmp / "mpt_missing.safetensors", tmp / "mpt" / "model.safetensors");
  EXPECT_HS_ERROR(Checkpoint((tmp / "mpt").string()), "model.safetensors",
                  "'transformer.blocks.1.norm_1.weight'", "attn_norm of layer 1", "[64]");

  test::copy_model_edited(falcon, tmp / "falcon",
                          [](const std::string&, std::vector<std::byte>&) {});
  SafetensorsFile fsrc((tmp / "falcon" / "model.safetensors").string());
  std::vector<TensorToWrite> ts;
  for (const auto& [name, t] : fsrc.tensors()) {
    TensorToWrite w{name, t.dtype, t.shape, t.data, t.nbytes};
    if (name == "transformer.h.2.mlp.dense_h_to_4h.weight") w.shape = {64, 256};
    ts.push_back(w);
  }
  write_safetensors((tmp / "f.safetensors").string(), ts);
  fs::rename(tmp / "f.safetensors", tmp / "falcon" / "model.safetensors");
  EXPECT_HS_ERROR(Checkpoint((tmp / "falcon").string()), "transformer.h.2.mlp.dense_h_to_4h.weight",
                  "ffn_up of layer 2", "[64, 256]", "expected [256, 64]");
  fs::remove_all(tmp);
}

// ---------------------------------------------------------------------------------------------
// hub cache

class HubCache : public TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    for (const char* v : {"HF_HOME", "HF_HUB_CACHE", "HOME"}) {
      const char* s = std::getenv(v);
      saved_.emplace_back(v, s ? std::optional<std::string>(s) : std::nullopt);
    }
    ::setenv("HF_HOME", (tmp_ / "hf").c_str(), 1);
    ::unsetenv("HF_HUB_CACHE");
    hub_ = tmp_ / "hf" / "hub";
  }
  void TearDown() override {
    for (const auto& [k, v] : saved_) {
      if (v)
        ::setenv(k.c_str(), v->c_str(), 1);
      else
        ::unsetenv(k.c_str());
    }
    TempDirTest::TearDown();
  }
  // root/models--org--name/snapshots/rev with a config.json; returns the snapshot directory.
  static fs::path snapshot(const fs::path& root, const std::string& repo, const std::string& rev,
                           bool config = true) {
    const fs::path d = root / repo / "snapshots" / rev;
    fs::create_directories(d);
    if (config) write_file(d / "config.json", "{}");
    return d;
  }
  static void ref(const fs::path& root, const std::string& repo, const std::string& name,
                  const std::string& rev) {
    fs::create_directories(root / repo / "refs");
    write_file(root / repo / "refs" / name, rev);
  }
  static void age(const fs::path& p, int seconds) {
    fs::last_write_time(p, fs::file_time_type::clock::now() - std::chrono::seconds(seconds));
  }
  static bool same(const std::string& a, const fs::path& b) {
    std::error_code ec;
    return fs::equivalent(a, b, ec);
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
  fs::path hub_;
};

TEST_F(HubCache, ResolvesThroughRefsMain) {
  snapshot(hub_, "models--org--name", "aaaa1111");
  const fs::path b = snapshot(hub_, "models--org--name", "bbbb2222");
  age(b, 100);  // refs/main wins over the newer snapshot
  ref(hub_, "models--org--name", "main", "bbbb2222\n");
  const std::string r = resolve_model_dir("org/name");
  EXPECT_TRUE(same(r, b)) << r;
  EXPECT_EQ(fs::path(r).filename().string(), "bbbb2222");
}

TEST_F(HubCache, NewestSnapshotWithoutRefsMain) {
  const fs::path a = snapshot(hub_, "models--org--name", "aaaa");
  const fs::path z = snapshot(hub_, "models--org--name", "zzzz");
  age(z, 1000);
  age(a, 10);
  std::string r = resolve_model_dir("org/name");
  EXPECT_TRUE(same(r, a)) << r;
  // Reversed ages: the choice follows time, not name order.
  age(z, 5);
  age(a, 500);
  r = resolve_model_dir("org/name");
  EXPECT_TRUE(same(r, z)) << r;
  // refs/main naming a snapshot that is not there: fall back to the newest.
  ref(hub_, "models--org--name", "main", "gone");
  r = resolve_model_dir("org/name");
  EXPECT_TRUE(same(r, z)) << r;
  // A stray file among the snapshots is not a snapshot.
  write_file(hub_ / "models--org--name" / "snapshots" / "README", "x");
  r = resolve_model_dir("org/name");
  EXPECT_TRUE(same(r, z)) << r;
}

TEST_F(HubCache, ExplicitRevision) {
  const fs::path a = snapshot(hub_, "models--org--name", "aaaa");
  const fs::path b = snapshot(hub_, "models--org--name", "bbbb");
  const fs::path c = snapshot(hub_, "models--org--name", "cccc");
  ref(hub_, "models--org--name", "main", "aaaa");
  ref(hub_, "models--org--name", "dev", "cccc\n");
  EXPECT_TRUE(same(resolve_model_dir("org/name"), a));
  EXPECT_TRUE(same(resolve_model_dir("org/name@bbbb"), b));
  EXPECT_TRUE(same(resolve_model_dir("org/name@dev"), c));
  EXPECT_TRUE(same(resolve_model_dir("org/name@main"), a));
  EXPECT_HS_ERROR(resolve_model_dir("org/name@missing-rev"), "org/name@missing-rev", "missing-rev");
  EXPECT_HS_ERROR(resolve_model_dir("org/name@"), "org/name@");
  EXPECT_HS_ERROR(resolve_model_dir("org/name@../../x"), "org/name@../../x");
  EXPECT_HS_ERROR(resolve_model_dir("org/name@/etc"), "org/name@/etc");
}

TEST_F(HubCache, HubCacheVariableTakesPrecedence) {
  snapshot(hub_, "models--org--name", "fromhome");
  const fs::path other = tmp_ / "other-cache";
  const fs::path o = snapshot(other, "models--org--name", "fromcache");
  ::setenv("HF_HUB_CACHE", other.c_str(), 1);
  EXPECT_TRUE(same(resolve_model_dir("org/name"), o));
  // A repo only under HF_HOME is not found while HF_HUB_CACHE is set.
  snapshot(hub_, "models--org--only", "r");
  EXPECT_HS_ERROR(resolve_model_dir("org/only"), "org/only", "not found", other.string());
  // Empty HF_HUB_CACHE counts as unset.
  ::setenv("HF_HUB_CACHE", "", 1);
  EXPECT_TRUE(same(resolve_model_dir("org/name"), hub_ / "models--org--name/snapshots/fromhome"));
  // Neither variable: ~/.cache/huggingface/hub.
  ::unsetenv("HF_HUB_CACHE");
  ::unsetenv("HF_HOME");
  ::setenv("HOME", (tmp_ / "home").c_str(), 1);
  const fs::path h = snapshot(tmp_ / "home/.cache/huggingface/hub", "models--org--name", "h");
  EXPECT_TRUE(same(resolve_model_dir("org/name"), h));
}

TEST_F(HubCache, UnknownIdsAndIncompleteSnapshots) {
  EXPECT_HS_ERROR(resolve_model_dir("org/unknown-model"), "org/unknown-model", "not found");
  EXPECT_HS_ERROR(resolve_model_dir("justaname"), "justaname", "not found");
  EXPECT_HS_ERROR(resolve_model_dir("a/b/c"), "a/b/c", "not found");
  EXPECT_HS_ERROR(resolve_model_dir("/nonexistent/dir"), "/nonexistent/dir", "not found");
  // The repo exists but has no snapshots.
  fs::create_directories(hub_ / "models--org--empty" / "snapshots");
  EXPECT_HS_ERROR(resolve_model_dir("org/empty"), "org/empty", "not found");
  // A snapshot without config.json (interrupted download).
  snapshot(hub_, "models--org--partial", "rev1", false);
  EXPECT_HS_ERROR(resolve_model_dir("org/partial"), "rev1", "config.json");
}

TEST_F(HubCache, HubIds) {
  auto id = parse_hub_id("bigscience/bloom-560m");
  ASSERT_TRUE(id);
  EXPECT_EQ(id->repo, "bigscience/bloom-560m");
  EXPECT_EQ(id->revision, "");
  id = parse_hub_id("tiiuae/falcon-rw-1b@refs/pr/1");
  ASSERT_TRUE(id);
  EXPECT_EQ(id->repo, "tiiuae/falcon-rw-1b");
  EXPECT_EQ(id->revision, "refs/pr/1");
  EXPECT_TRUE(parse_hub_id("a_b/C.d-9"));
  EXPECT_TRUE(parse_hub_id("o/" + std::string(96, 'x')));
  // Paths and what the hub refuses are not ids (so they are never looked up online).
  for (const std::string& bad : std::vector<std::string>{
           "name", "a/b/c", "/abs/path", "./x", "../x", "x/..", "org/", "/name", "org/-x", "org/x.",
           "org/a--b", "org/a..b", "org/a b", "~/models", "o/" + std::string(97, 'x')})
    EXPECT_FALSE(parse_hub_id(bad)) << bad;
  EXPECT_HS_ERROR(parse_hub_id("org/name@"), "org/name@", "invalid revision");
  EXPECT_HS_ERROR(parse_hub_id("org/name@../x"), "org/name@../x", "invalid revision");
}

TEST_F(HubCache, CachedSnapshotAndItsModelFiles) {
  const fs::path a = snapshot(hub_, "models--org--name", "aaaa");
  ref(hub_, "models--org--name", "dev", "aaaa");
  const std::string root = hub_cache_root();
  EXPECT_EQ(root, hub_.string());
  EXPECT_EQ(hub_repo_dir(root, "org/name"), (hub_ / "models--org--name").string());
  EXPECT_TRUE(same(cached_snapshot({"org/name", ""}, root).value(), a));
  EXPECT_TRUE(same(cached_snapshot({"org/name", "dev"}, root).value(), a));
  EXPECT_TRUE(same(cached_snapshot({"org/name", "aaaa"}, root).value(), a));
  EXPECT_FALSE(cached_snapshot({"org/name", "v2"}, root));
  EXPECT_FALSE(cached_snapshot({"org/other", ""}, root));

  // Config and weights: one file, or the index and every shard it names.
  EXPECT_FALSE(has_model_files(a.string()));
  write_file(a / "model.safetensors", "x");
  EXPECT_TRUE(has_model_files(a.string()));
  const fs::path b = snapshot(hub_, "models--org--sharded", "bbbb");
  write_file(b / "model.safetensors.index.json",
             R"({"weight_map": {"x": "model-1.safetensors", "y": "model-2.safetensors"}})");
  write_file(b / "model-1.safetensors", "x");
  EXPECT_FALSE(has_model_files(b.string()));  // a shard still missing
  write_file(b / "model-2.safetensors", "x");
  EXPECT_TRUE(has_model_files(b.string()));
  fs::remove(b / "config.json");
  EXPECT_FALSE(has_model_files(b.string()));
}

TEST_F(HubCache, CheckpointFromCacheWithBlobSymlinks) {
  // The layout huggingface_hub writes: snapshot files are symlinks into blobs/.
  const fs::path repo = hub_ / "models--bigscience--tiny8";
  fs::create_directories(repo / "blobs");
  fs::copy_file(kTiny8 + "/config.json", repo / "blobs" / "c0ffee");
  fs::copy_file(kTiny8 + "/model.safetensors", repo / "blobs" / "deadbeef");
  const fs::path snap = repo / "snapshots" / "0123abcd";
  fs::create_directories(snap);
  fs::create_symlink("../../blobs/c0ffee", snap / "config.json");
  fs::create_symlink("../../blobs/deadbeef", snap / "model.safetensors");
  ref(hub_, "models--bigscience--tiny8", "main", "0123abcd");
  const Checkpoint ck("bigscience/tiny8");
  EXPECT_TRUE(same(ck.dir(), snap));
  EXPECT_EQ(ck.config().n_layer, 3);
  EXPECT_EQ(ck.tensor_names().size(), 41u);
  const Checkpoint pinned("bigscience/tiny8@0123abcd");
  EXPECT_EQ(pinned.config().vocab, 8192);
}

// ---------------------------------------------------------------------------------------------
// Inputs the fuzzers (scripts/fuzz.sh) found mishandled

// A line break quoted from config.json broke the one-line message (fuzz_config).
TEST(Config, FuzzQuotedLineBreakStaysOneLine) {
  EXPECT_HS_ERROR(ModelConfig::from_json(json{{"model_type", "fa\nlcon"}}, "c.json"), "c.json",
                  "model_type \"fa?lcon\" is not supported");
}

// nlohmann reports a number beyond a double as out_of_range, which escaped as an unexpected
// exception from every JSON file and from a safetensors header (fuzz_config, fuzz_safetensors).
TEST_F(TempDirTest, FuzzNumberBeyondDoubleIsInvalidJson) {
  const fs::path cfg = tmp_ / "config.json";
  write_file(cfg, R"({"model_type": "bloom", "n_head": 1e400})");
  EXPECT_HS_ERROR(read_json_file(cfg.string()), cfg.string(), "not valid JSON",
                  "number out of range");
  const fs::path st = tmp_ / "model.safetensors";
  write_raw(st, R"({"t": {"dtype": "F32", "shape": [-1e400], "data_offsets": [0, 4]}})", 4);
  EXPECT_HS_ERROR(SafetensorsFile(st.string()), st.string(), "header is not valid JSON",
                  "number out of range");
}

}  // namespace
}  // namespace hs
