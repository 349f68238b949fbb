#include "surgery/schedule.h"

#include <algorithm>
#include <cmath>

namespace hs {

double lr_factor(int64_t s, int64_t warmup, int64_t total) {
  if (s < warmup) return double(s) / double(std::max<int64_t>(1, warmup));
  const double progress = double(s - warmup) / double(std::max<int64_t>(1, total - warmup));
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

int64_t default_warmup(int64_t total) { return std::min<int64_t>(100, total / 4); }

}  // namespace hs
