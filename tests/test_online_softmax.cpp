// The tile-by-tile softmax recurrence of the CUDA attention kernel (ops/online_softmax.h),
// run here on the CPU exactly as the kernel runs it (tiles of 32 keys, a running maximum that
// rises), against the plain two-pass definition in double. This is the part of the GPU
// attention that CI, which has no GPU, can still check.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "ops/online_softmax.h"

namespace hs {
namespace {

struct Reference {
  double bos, entropy, local;
  std::vector<double> out;
};

// p = softmax(s); statistics of the last row (position n - 1) and p . v for v [n, dv].
Reference two_pass(const std::vector<float>& s, const std::vector<float>& v, int dv) {
  const int n = int(s.size());
  const double mx = *std::max_element(s.begin(), s.end());
  std::vector<double> p(n);
  double sum = 0;
  for (int j = 0; j < n; ++j) sum += p[j] = std::exp(double(s[j]) - mx);
  Reference r{0, 0, 0, std::vector<double>(dv, 0)};
  for (int j = 0; j < n; ++j) {
    p[j] /= sum;
    if (p[j] > 0) r.entropy -= p[j] * std::log(p[j]);
    if (j >= n - 3) r.local += p[j];
    for (int e = 0; e < dv; ++e) r.out[e] += p[j] * v[j * dv + e];
  }
  r.bos = p[0];
  return r;
}

// The kernel's loop for one query row at position n - 1, in float, tile by tile.
Reference tiled(const std::vector<float>& s, const std::vector<float>& v, int dv) {
  constexpr int kTile = 32;
  const int n = int(s.size()), pos = n - 1;
  online::RowState st;
  std::vector<float> o(dv, 0.0f);
  for (int kt = 0; kt < n; kt += kTile) {
    const int nt = std::min(kTile, n - kt);
    float tmax = -INFINITY;
    for (int i = 0; i < nt; ++i) tmax = std::max(tmax, s[kt + i]);
    const float alpha = online::rescale(st, std::max(st.m, tmax));
    float se = 0, ses = 0, eb = 0, el = 0;
    std::vector<float> e(nt);
    for (int i = 0; i < nt; ++i) {
      const int j = kt + i;
      e[i] = std::exp(s[j] - st.m);
      se += e[i];
      ses += e[i] * (s[j] - st.m);
      if (j == 0) eb = e[i];
      if (j >= pos - 2) el += e[i];
    }
    online::add_tile(st, se, ses, eb, el);
    for (int k = 0; k < dv; ++k) {
      o[k] *= alpha;
      for (int i = 0; i < nt; ++i) o[k] += e[i] * v[(kt + i) * dv + k];
    }
  }
  const online::RowStats rs = online::finish(st);
  Reference r{rs.bos, rs.entropy, rs.local, {}};
  for (float x : o) r.out.push_back(x / st.l);
  return r;
}

void expect_close(const std::vector<float>& s, const std::vector<float>& v, int dv,
                  const char* what) {
  const Reference a = tiled(s, v, dv), b = two_pass(s, v, dv);
  // fp32 sums over up to a few hundred terms: 2e-6 absolute on quantities in [0, 1], and on the
  // entropy relative to log(n) (its largest possible value).
  const double n = double(s.size());
  EXPECT_NEAR(a.bos, b.bos, 2e-6) << what << " n=" << n;
  EXPECT_NEAR(a.local, b.local, 2e-6) << what << " n=" << n;
  EXPECT_NEAR(a.entropy, b.entropy, 2e-6 * std::max(1.0, std::log(n))) << what << " n=" << n;
  for (int e = 0; e < dv; ++e) EXPECT_NEAR(a.out[e], b.out[e], 2e-6) << what << " n=" << n;
}

TEST(OnlineSoftmax, RandomScoresAnyLength) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0, 3);
  for (int n : {1, 2, 3, 31, 32, 33, 64, 65, 100, 257}) {
    std::vector<float> s(n), v(n * 3);
    for (auto& x : s) x = nd(rng);
    for (auto& x : v) x = nd(rng) / 3;
    expect_close(s, v, 3, "random");
  }
}

// The maximum rises in every tile (ALiBi's slope * j grows with j): every rescale path runs.
TEST(OnlineSoftmax, RisingMaximum) {
  for (int n : {40, 97, 300}) {
    std::vector<float> s(n), v(n);
    for (int j = 0; j < n; ++j) {
      s[j] = 0.25f * float(j) + std::sin(float(j));
      v[j] = std::cos(float(j));
    }
    expect_close(s, v, 1, "rising");
  }
}

// A collapsed head: nearly all mass on key 0, entropy close to 0 (no cancellation left over).
TEST(OnlineSoftmax, CollapsedHead) {
  for (int n : {5, 60, 200}) {
    std::vector<float> s(n, 0.0f), v(n, 1.0f);
    s[0] = 25.0f;
    v[0] = 2.0f;
    const Reference a = tiled(s, v, 1), b = two_pass(s, v, 1);
    EXPECT_NEAR(a.bos, 1.0, 1e-6);
    EXPECT_NEAR(a.entropy, b.entropy, 1e-6) << "n=" << n;
    EXPECT_LT(a.entropy, 1e-6);
  }
}

// A tile whose maximum lies below the running one: alpha is 1 and nothing may change but sums.
TEST(OnlineSoftmax, FallingScores) {
  std::vector<float> s(90), v(90);
  for (int j = 0; j < 90; ++j) {
    s[j] = 10.0f - 0.3f * float(j);
    v[j] = float(j % 7) - 3.0f;
  }
  expect_close(s, v, 1, "falling");
}

}  // namespace
}  // namespace hs
