// The project's random numbers: mt19937_64 (its sequence is fixed by the C++ standard) with our
// own uniform and normal transforms, because std::uniform_real_distribution and
// std::normal_distribution differ between standard libraries and a seed must mean the same
// weights everywhere.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>
#include <random>

namespace hs {

class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  uint64_t next() { return gen_(); }
  // Uniform in (0, 1): never 0, so log() stays finite.
  double uniform01() { return (double(gen_() >> 11) + 0.5) * 0x1.0p-53; }
  // Standard normal pairs from Box-Muller.
  void normal_pair(double& a, double& b) {
    const double r = std::sqrt(-2.0 * std::log(uniform01()));
    const double th = 2 * std::numbers::pi * uniform01();
    a = r * std::cos(th);
    b = r * std::sin(th);
  }
  // Fills out[0..n) with N(0, stdev).
  void fill_normal(float* out, int64_t n, double stdev) {
    for (int64_t i = 0; i < n; i += 2) {
      double a, b;
      normal_pair(a, b);
      out[i] = float(stdev * a);
      if (i + 1 < n) out[i + 1] = float(stdev * b);
    }
  }

 private:
  std::mt19937_64 gen_;
};

}  // namespace hs
