// ALiBi slopes for any head count, one formula for every family (docs/numerics.md).
#pragma once

#include <cstdint>
#include <vector>

namespace hs {

// With n2 = 2^floor(log2 H) and bias maximum B (8 for BLOOM and Falcon, MPT's alibi_bias_max):
// base = 2^(-B/n2), slope[i] = base^(i+1) for i < n2; then for the H-n2 extra heads:
// extra = 2^(-B/(2 n2)), slope[n2+k] = extra^(2k+1). (MPT writes the same numbers as
// 2^(-B·i/N), N = 2^ceil(log2 H), reordered odd-then-even and cut to H.)
std::vector<float> alibi_slopes(int64_t n_head, double bias_max = 8);

}  // namespace hs
