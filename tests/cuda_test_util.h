// What the CUDA kernel tests share: the fixture that skips without a usable GPU, a printed
// random seed, and device buffers from and to host vectors (outputs poisoned with NaN first, so
// an element a kernel forgets fails).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "cuda/runtime.h"
#include "ops/qkv_layout.h"

namespace hs {
namespace {

using cuda::DeviceBuffer;

class Gpu : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = cuda::unusable_reason();
    if (!why.empty()) GTEST_SKIP() << why;
  }
};

// Fresh inputs each run: a seed from the clock, printed so a failure can be replayed with
// HS_TEST_SEED.
uint32_t test_seed() {
  static const uint32_t seed = [] {
    const char* env = std::getenv("HS_TEST_SEED");
    const uint32_t s = env ? uint32_t(std::strtoul(env, nullptr, 10)) : std::random_device{}();
    std::printf("HS_TEST_SEED=%u\n", s);
    return s;
  }();
  return seed;
}

std::vector<float> randn(std::mt19937& rng, size_t n, float scale = 1, float mean = 0) {
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = mean + scale * nd(rng);
  return v;
}

template <class T>
DeviceBuffer upload(const std::vector<T>& h) {
  DeviceBuffer d(std::max<size_t>(h.size() * sizeof(T), 1));
  cuda::check(cudaMemcpy(d.as<void>(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice),
              "upload");
  return d;
}

// Device buffer of `bytes` filled with NaN (all bits set).
DeviceBuffer poisoned(size_t bytes) {
  DeviceBuffer d(std::max<size_t>(bytes, 1));
  cuda::check(cudaMemset(d.as<void>(), 0xff, bytes), "poison");
  return d;
}

template <class T>
std::vector<T> download(const DeviceBuffer& d, size_t n) {
  cuda::check(cudaDeviceSynchronize(), "sync");
  std::vector<T> h(n);
  cuda::check(cudaMemcpy(h.data(), d.as<void>(), n * sizeof(T), cudaMemcpyDeviceToHost),
              "download");
  return h;
}

// Part k (0 q, 1 k, 2 v) of every head of rows [r0, r0 + n) of a [*, 3 H hd] gradient buffer.
inline std::vector<float> qkv_part(const float* x, int r0, int n, int k, int H, int hd) {
  std::vector<float> out;
  for (int r = r0; r < r0 + n; ++r)
    for (int h = 0; h < H; ++h) {
      const float* at = x + (size_t(r) * 3 * H + 3 * h + k) * hd;
      out.insert(out.end(), at, at + hd);
    }
  return out;
}

// An attention backward's dqkv [N, 3 H hd] after one call (once) and a second (twice): the masked
// heads' columns exactly 0, and the second call added exactly as much again (it accumulates,
// deterministically).
inline void expect_masked_and_doubled(const std::vector<float>& once,
                                      const std::vector<float>& twice,
                                      const std::vector<uint8_t>& mask, int N, int H, int hd,
                                      const std::string& where) {
  int64_t masked_nonzero = 0, not_doubled = 0;
  for (int g = 0; g < N; ++g)
    for (int h = 0; h < H; ++h)
      if (!mask.empty() && !mask[h])
        for (int c = 0; c < 3 * hd; ++c)
          masked_nonzero += once[size_t(g) * 3 * H * hd + qkv_row(h, 0, hd) + c] != 0;
  for (size_t i = 0; i < once.size(); ++i) not_doubled += twice[i] != 2 * once[i];
  EXPECT_EQ(masked_nonzero, 0) << where << ": gradient in a masked head";
  EXPECT_EQ(not_doubled, 0) << where << ": a second call does not add the same again";
}

}  // namespace
}  // namespace hs
