// Wall-clock durations for progress lines, ETAs and reported timings.
#pragma once

#include <chrono>

namespace hs {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace hs
