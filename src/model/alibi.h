// ALiBi slopes for any head count (BLOOM's construction, including non-powers of two).
#pragma once

#include <cstdint>
#include <vector>

namespace hs {

// c = 2^floor(log2 H); base = 2^(-8/c); slope[i] = base^(i+1) for i < c; then for the H-c extra
// heads: extra = 2^(-4/c), slope[c+k] = extra^(2k+1).
std::vector<float> alibi_slopes(int64_t n_head);

}  // namespace hs
