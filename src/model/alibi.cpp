#include "model/alibi.h"

#include <cmath>

namespace hs {

std::vector<float> alibi_slopes(int64_t n_head, double bias_max) {
  int64_t c = 1;
  while (c * 2 <= n_head) c *= 2;
  const double base = std::pow(2.0, -bias_max / double(c));
  std::vector<float> s(n_head);
  for (int64_t i = 0; i < c; ++i) s[i] = float(std::pow(base, double(i + 1)));
  const double extra = std::pow(2.0, -bias_max / 2 / double(c));
  for (int64_t k = 0; k < n_head - c; ++k) s[c + k] = float(std::pow(extra, double(2 * k + 1)));
  return s;
}

}  // namespace hs
