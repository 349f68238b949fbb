// What the CUDA kernel tests share: the fixture that skips without a usable GPU, a printed
// random seed, and device buffers from and to host vectors (outputs poisoned with NaN first, so
// an element a kernel forgets fails).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "cuda/runtime.h"

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

}  // namespace
}  // namespace hs
