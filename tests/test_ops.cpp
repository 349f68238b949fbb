// The CPU operations: every backward against finite differences in float64, the ALiBi slopes
// and score conventions of every family, the qkv layout permutation, chunked log-sum-exp.
// (Whole models against the float64 reference: test_families.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "engine/cpu/forward.h"
#include "io/safetensors.h"
#include "model/alibi.h"
#include "ops/cpu/ops.h"

namespace hs {
namespace {

namespace fs = std::filesystem;

TEST(Alibi, SlopesPowerOfTwoAndOthers) {
  const auto s16 = alibi_slopes(16);
  for (int i = 0; i < 16; ++i) EXPECT_FLOAT_EQ(s16[i], float(std::pow(2.0, -0.5 * (i + 1))));
  // 12 heads: c = 8, base 0.5 for the first 8; the 4 extra are (2^-0.5)^(1,3,5,7).
  const auto s12 = alibi_slopes(12);
  const double expect12[12] = {0.5,          0.25,         0.125,        0.0625,
                               0.03125,      0.015625,     0.0078125,    0.00390625,
                               0.7071067812, 0.3535533906, 0.1767766953, 0.0883883476};
  for (int i = 0; i < 12; ++i) EXPECT_NEAR(s12[i], expect12[i], 1e-7) << i;
  // bloom-176b's 112 heads: 64 + 48 extra.
  const auto s112 = alibi_slopes(112);
  EXPECT_FLOAT_EQ(s112[0], float(std::pow(2.0, -8.0 / 64)));
  EXPECT_FLOAT_EQ(s112[64], float(std::pow(2.0, -4.0 / 64)));
  EXPECT_FLOAT_EQ(s112[111], float(std::pow(std::pow(2.0, -4.0 / 64), 95)));
  EXPECT_EQ(alibi_slopes(1).size(), 1u);
  EXPECT_FLOAT_EQ(alibi_slopes(1)[0], 1.0f / 256);
}

// MPT writes the slopes as 2^(-B i / N), i = 1..N with N = 2^ceil(log2 H), reordered odd
// positions first then even, cut to H: the same numbers as the one formula, for any bias max.
TEST(Alibi, MptFormulaGivesTheSameSlopes) {
  for (int64_t H : {1, 3, 6, 8, 12, 16, 20, 112})
    for (double B : {8.0, 16.0, 4.0}) {
      int64_t N = 1;
      while (N < H) N *= 2;
      std::vector<double> base;
      for (int64_t i = 1; i <= N; ++i) base.push_back(std::pow(2.0, -B * double(i) / double(N)));
      std::vector<double> mpt;
      if (N != H) {
        for (int64_t i = 1; i < N; i += 2) mpt.push_back(base[i]);
        for (int64_t i = 0; i < N; i += 2) mpt.push_back(base[i]);
      } else {
        mpt = base;
      }
      const auto ours = alibi_slopes(H, B);
      for (int64_t h = 0; h < H; ++h)
        EXPECT_NEAR(ours[h], mpt[h], 1e-7 * mpt[h]) << H << " heads, B " << B << ", head " << h;
    }
}

// Falcon's bias in bfloat16 (HF: slopes.bfloat16() * arange): rounding to nearest even, and
// visible for a non-power-of-two slope.
TEST(Alibi, FalconBiasInBfloat16) {
  EXPECT_EQ(bf16_round(1.0f), 1.0f);
  EXPECT_EQ(bf16_round(1.0f + 0x1p-8f), 1.0f);                // a tie rounds to even
  EXPECT_EQ(bf16_round(1.0f + 3 * 0x1p-8f), 1.0f + 0x1p-6f);  // the other tie, up to even
  EXPECT_EQ(bf16_round(1.0f + 0x1p-7f), 1.0f + 0x1p-7f);      // representable
  const AlibiParams falcon{0, true, true};
  const float slope = 0.70710677f;  // 12 heads: head 8's slope 2^-0.5
  // bf16(slope) = 0.70703125; times j = 3 is 2.12109375, which rounds to 2.125 in bf16.
  EXPECT_EQ(bf16_round(slope), 0.70703125f);
  EXPECT_EQ(alibi_score<double>(0.0, 1.0, slope, 3, falcon), 2.125);
  EXPECT_EQ(alibi_score<double>(1.5, 0.5, slope, 3, falcon), (1.5 + 2.125) * 0.5);
  // BLOOM and MPT: q.k scaled, then the bias slope * j, unrounded.
  EXPECT_EQ(alibi_score<double>(1.5, 0.5, slope, 3, AlibiParams{}), 0.75 + double(slope) * 3);
  // HF 5.x eager Falcon: the bias a second time, scaled.
  const AlibiParams eager{0, true, true, true};
  EXPECT_EQ(alibi_score<double>(1.5, 0.5, slope, 3, eager), (1.5 + 2.125) * 0.5 + 2.125 * 0.5);
}

// MPT's [Q|K|V] rows to the internal per-head order and back: a permutation that moves part p
// of head h from rows p*d + h*hd to (3h + p)*hd, exact in both directions, also in pieces.
TEST(QkvLayout, BlockedPermutationRoundTrips) {
  const int64_t H = 3, hd = 2, d = H * hd, cols = 5;
  std::vector<float> file(3 * d * cols);
  for (size_t i = 0; i < file.size(); ++i) file[i] = float(i);
  const size_t rb = cols * sizeof(float);
  std::vector<float> internal(file.size()), back(file.size());
  auto bytes = [](auto& v) { return reinterpret_cast<std::byte*>(v.data()); };
  qkv_copy_rows(QkvLayout::blocked, false, bytes(file), bytes(internal), 0, 3 * d, rb, H, hd);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t p = 0; p < 3; ++p)
      for (int64_t i = 0; i < hd; ++i)
        for (int64_t c = 0; c < cols; ++c)
          EXPECT_EQ(internal[(qkv_row(h, p, hd) + i) * cols + c],
                    file[(p * d + h * hd + i) * cols + c]);
  // Rows 3..10 alone (a chunk that cuts through heads) land where the whole copy put them.
  std::vector<float> part(8 * cols);
  qkv_copy_rows(QkvLayout::blocked, false, bytes(file), bytes(part), 3, 8, rb, H, hd);
  for (size_t i = 0; i < part.size(); ++i) EXPECT_EQ(part[i], internal[3 * cols + i]);
  qkv_copy_rows(QkvLayout::blocked, true, bytes(internal), bytes(back), 0, 3 * d, rb, H, hd);
  EXPECT_EQ(back, file);
  // The per-head layout is the identity.
  qkv_copy_rows(QkvLayout::per_head, false, bytes(file), bytes(back), 0, 3 * d, rb, H, hd);
  EXPECT_EQ(back, file);
}

TEST(LogSumExp, ChunkedEqualsDirect) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0, 5);
  const int64_t T = 3, V = 1000;
  std::vector<float> x(T * V);
  for (auto& v : x) v = nd(rng);
  std::vector<float> m(T, -INFINITY);
  std::vector<double> s(T, 0);
  std::vector<float> chunk;
  for (int64_t c0 = 0; c0 < V; c0 += 300) {
    const int64_t n = std::min<int64_t>(300, V - c0);
    chunk.resize(T * n);
    for (int64_t t = 0; t < T; ++t) std::copy_n(x.data() + t * V + c0, n, chunk.data() + t * n);
    cpu::logsumexp_update(chunk.data(), T, n, m.data(), s.data());
  }
  for (int64_t t = 0; t < T; ++t) {
    double mx = -INFINITY, acc = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(x[t * V + v]));
    for (int64_t v = 0; v < V; ++v) acc += std::exp(x[t * V + v] - mx);
    EXPECT_NEAR(m[t] + std::log(s[t]), mx + std::log(acc), 1e-6);
  }
}

// ---- finite-difference checks of every backward, in float64 --------------------------------

std::vector<double> randn(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// Checks d(loss)/d(x[i]) for every i against central differences, where loss(x) is a scalar
// function of the whole buffer; relative error against max(1, |grad|) below 1e-6.
void expect_gradient(std::vector<double>& x, const std::vector<double>& grad,
                     const std::function<double()>& loss, const std::string& what) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  const double h = 1e-6;
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double up = loss();
    x[i] = keep - h;
    const double down = loss();
    x[i] = keep;
    const double num = (up - down) / (2 * h);
    EXPECT_NEAR(grad[i], num, 1e-6 * std::max(1.0, std::abs(num))) << what << " index " << i;
  }
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

TEST(FiniteDifferences, LayerNorm) {
  const int64_t N = 3, C = 7;
  auto x = randn(N * C, 1), w = randn(C, 2), b = randn(C, 3), r = randn(N * C, 4);
  std::vector<double> out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    cpu::layernorm_forward<double>(out.data(), mean.data(), rstd.data(), x.data(), w.data(),
                                   b.data(), N, C, 1e-5);
    return dot(out, r);
  };
  loss();
  std::vector<double> dx(N * C, 0), dw(C, 0), db(C, 0);
  cpu::layernorm_backward<double>(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(),
                                  mean.data(), rstd.data(), N, C);
  expect_gradient(x, dx, loss, "layernorm dinp");
  expect_gradient(w, dw, loss, "layernorm dw");
  expect_gradient(b, db, loss, "layernorm db");
}

TEST(FiniteDifferences, LinearFullAndSlices) {
  const int64_t N = 4, IC = 5, OC = 6;
  auto x = randn(N * IC, 1), W = randn(OC * IC, 2), bias = randn(OC, 3), r = randn(N * OC, 4);
  std::vector<double> out(N * OC);
  auto loss = [&] {
    cpu::linear_forward<double>(out.data(), x.data(), W.data(), bias.data(), N, IC, OC);
    return dot(out, r);
  };
  std::vector<double> dx(N * IC, 0), dW(OC * IC, 0), db(OC, 0);
  cpu::linear_backward_input<double>(dx.data(), r.data(), W.data(), N, IC, OC, false);
  cpu::linear_backward_weight<double>(dW.data(), IC, db.data(), r.data(), OC, x.data(), IC, N, OC,
                                      IC);
  expect_gradient(x, dx, loss, "linear dinp");
  expect_gradient(W, dW, loss, "linear dW");
  expect_gradient(bias, db, loss, "linear dbias");
  // A slice: rows 2..4 of W (a head's qkv rows) and input columns 1..3 (a head's dense columns)
  // must equal the matching part of the full gradient.
  std::vector<double> rows(3 * IC, 0), rows_b(3, 0), cols(OC * 2, 0);
  cpu::linear_backward_weight<double>(rows.data(), IC, rows_b.data(), r.data() + 2, OC, x.data(),
                                      IC, N, 3, IC);
  cpu::linear_backward_weight<double>(cols.data(), 2, nullptr, r.data(), OC, x.data() + 1, IC, N,
                                      OC, 2);
  for (int64_t o = 0; o < 3; ++o) {
    EXPECT_NEAR(rows_b[o], db[2 + o], 1e-12);
    for (int64_t i = 0; i < IC; ++i) EXPECT_NEAR(rows[o * IC + i], dW[(2 + o) * IC + i], 1e-12);
  }
  for (int64_t o = 0; o < OC; ++o)
    for (int64_t i = 0; i < 2; ++i) EXPECT_NEAR(cols[o * 2 + i], dW[o * IC + 1 + i], 1e-12);
}

// The vectorised tanh-form GELU of inference against the float64 function (as x·sigmoid(2u)):
// every 1/256 on [-40, 40] (both tails: exp's clamp, the far negative side's tiny values),
// random magnitudes up to 1e4, signed zeros and NaN. 8 ulp relative plus exp's condition (4 ulp
// per unit of its argument: 2.2e-5 at the clamp, on values below 1e-30 of x), or 0 where the true
// value is below 1e-38 of x (as float's tanh gives it); the erf form is gelu_forward's.
TEST(Ops, GeluFastMatchesFloat64) {
  std::vector<float> x;
  for (int i = -40 * 256; i <= 40 * 256; ++i) x.push_back(float(i) / 256);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> e(-4, 4);
  for (int i = 0; i < 1000; ++i) x.push_back((rng() % 2 ? 1 : -1) * std::pow(10.0f, e(rng)));
  x.push_back(0.0f);
  x.push_back(-0.0f);
  x.push_back(NAN);
  std::vector<float> got(x.size()), erf_got(x.size()), erf_want(x.size());
  cpu::gelu_forward_fast(got.data(), x.data(), int64_t(x.size()), Gelu::tanh);
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) {
      EXPECT_TRUE(std::isnan(got[i]));
      continue;
    }
    // The same function as gelu<double>'s 0.5·x·(1 + tanh(u)), whose 1 + tanh(u) cancels to
    // 0 in double below x = -8 while x·sigmoid(2u) keeps its digits.
    const double u = gelu_detail::kS * x[i] * (1 + gelu_detail::kC * double(x[i]) * x[i]);
    const double want = x[i] / (1 + std::exp(-2 * u));
    const double err = std::abs(got[i] - want);
    // exp's condition: the ~6 float roundings of its argument 2u move it by up to 4 ulp of 2u.
    const double tol = 6e-8 * (8 + 4 * std::abs(2 * u)) * std::abs(want);
    EXPECT_LE(err, std::max(tol, std::abs(want) < 1e-38 * std::abs(x[i]) ? 1e-37 : 0.0))
        << "x = " << x[i];
    if (std::abs(want) > 1e-30) worst = std::max(worst, err / tol);
  }
  std::printf("gelu_forward_fast: worst error %.2f of its bound\n", worst);
  cpu::gelu_forward_fast(erf_got.data(), x.data(), int64_t(x.size()), Gelu::erf);
  cpu::gelu_forward<float>(erf_want.data(), x.data(), int64_t(x.size()), Gelu::erf);
  for (size_t i = 0; i < x.size(); ++i)
    if (!std::isnan(x[i])) {
      EXPECT_EQ(erf_got[i], erf_want[i]) << "x = " << x[i];
    }
}

TEST(FiniteDifferences, Gelu) {
  for (Gelu kind : {Gelu::tanh, Gelu::erf}) {
    auto x = randn(50, 1, 2.0), r = randn(50, 2);
    std::vector<double> out(50), dx(50);
    auto loss = [&] {
      cpu::gelu_forward<double>(out.data(), x.data(), 50, kind);
      return dot(out, r);
    };
    cpu::gelu_backward<double>(dx.data(), r.data(), x.data(), 50, kind);
    expect_gradient(x, dx, loss, kind == Gelu::tanh ? "gelu tanh" : "gelu erf");
  }
  // The two forms: the tanh approximation is within 1e-3 of the exact one, and both are exact
  // at known points (erf form: x * Phi(x)).
  EXPECT_NEAR(gelu(1.0, Gelu::erf), 0.8413447460685429, 1e-15);
  EXPECT_NEAR(gelu(-2.0, Gelu::erf), -2 * 0.022750131948179195, 1e-15);
  for (double x = -5; x <= 5; x += 0.25) EXPECT_NEAR(gelu(x, Gelu::tanh), gelu(x, Gelu::erf), 1e-3);
}

// Every family's score convention (ops/alibi.h): BLOOM's, MPT's softmax_scale, Falcon's bias
// before the scale in bfloat16.
class AlibiConventions : public ::testing::TestWithParam<AlibiParams> {};

TEST_P(AlibiConventions, AttentionWithHeadMask) {
  const AlibiParams a = GetParam();
  const int64_t T = 6, H = 3, hd = 4;
  auto qkv = randn(T * 3 * H * hd, 1), r = randn(T * H * hd, 2);
  const auto slopes = alibi_slopes(H);
  std::vector<double> ctx(T * H * hd);
  auto loss = [&] {
    cpu::alibi_attention_forward<double>(ctx.data(), H * hd, nullptr, nullptr,
                                         cpu::fused_qkv(qkv.data(), T, H, hd), slopes.data(), a, H,
                                         hd);
    return dot(ctx, r);
  };
  std::vector<double> dqkv(qkv.size(), 0);
  cpu::alibi_attention_backward<double>(dqkv.data(), r.data(), qkv.data(), slopes.data(), a,
                                        nullptr, T, H, hd);
  expect_gradient(qkv, dqkv, loss, "attention dqkv");
  // With a mask only head 1's columns are computed, and they equal the full result.
  const uint8_t mask[3] = {0, 1, 0};
  std::vector<double> masked(qkv.size(), 0);
  cpu::alibi_attention_backward<double>(masked.data(), r.data(), qkv.data(), slopes.data(), a, mask,
                                        T, H, hd);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < 3 * H * hd; ++c) {
      const bool in_head1 = c >= 3 * hd && c < 6 * hd;
      EXPECT_EQ(masked[t * 3 * H * hd + c], in_head1 ? dqkv[t * 3 * H * hd + c] : 0.0);
    }
}

INSTANTIATE_TEST_SUITE_P(Families, AlibiConventions,
                         ::testing::Values(AlibiParams{}, AlibiParams{0.3, false, false},
                                           AlibiParams{0, true, true},
                                           AlibiParams{0, true, false}));

// The induced-collapse term of the demo recipe: -log p[t, 0] summed over rows t >= 1 of the
// masked heads, against a direct float64 evaluation of the probabilities.
TEST(FiniteDifferences, AttentionSinkTerm) {
  const int64_t T = 6, H = 3, hd = 4;
  auto qkv = randn(T * 3 * H * hd, 3);
  const auto slopes = alibi_slopes(H);
  const uint8_t mask[3] = {1, 0, 1};
  const double weight = 0.7;
  auto loss = [&] {
    std::vector<double> probs(H * T * T), ctx(T * H * hd);
    cpu::alibi_attention_forward<double>(ctx.data(), H * hd, probs.data(), nullptr,
                                         cpu::fused_qkv(qkv.data(), T, H, hd), slopes.data(),
                                         AlibiParams{}, H, hd);
    double l = 0;
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 1; t < T; ++t)
        if (mask[h]) l -= weight * std::log(probs[(h * T + t) * T]);
    return l;
  };
  std::vector<double> dqkv(qkv.size(), 0);
  const double got = cpu::alibi_sink_loss_backward<double>(dqkv.data(), qkv.data(), slopes.data(),
                                                           AlibiParams{}, mask, weight, T, H, hd);
  EXPECT_NEAR(got, loss(), 1e-12 * std::abs(loss()));
  expect_gradient(qkv, dqkv, loss, "sink term dqkv");
  // Unmasked heads get nothing.
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 3 * hd; c < 6 * hd; ++c) EXPECT_EQ(dqkv[t * 3 * H * hd + c], 0.0);
}

TEST(FiniteDifferences, CrossEntropyChunk) {
  const int64_t T = 3, V = 9;
  auto logits = randn(T * V, 1, 3.0);
  const int32_t target[T] = {4, -1, 8};  // -1: not predicted
  const double scale[T] = {0.5, 0.5, 0.25};
  auto loss = [&] {
    double l = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (target[t] < 0) continue;
      double mx = -INFINITY, z = 0;
      for (int64_t v = 0; v < V; ++v) mx = std::max(mx, logits[t * V + v]);
      for (int64_t v = 0; v < V; ++v) z += std::exp(logits[t * V + v] - mx);
      l += scale[t] * (mx + std::log(z) - logits[t * V + target[t]]);
    }
    return l;
  };
  std::vector<double> lse(T);
  for (int64_t t = 0; t < T; ++t) {
    double mx = -INFINITY, z = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, logits[t * V + v]);
    for (int64_t v = 0; v < V; ++v) z += std::exp(logits[t * V + v] - mx);
    lse[t] = mx + std::log(z);
  }
  // Two chunks of the vocabulary, as the chunked lm_head runs it.
  std::vector<double> d(T * V), c1(T * 5), c2(T * 4), l1(T * 5), l2(T * 4);
  for (int64_t t = 0; t < T; ++t) {
    std::copy_n(&logits[t * V], 5, &l1[t * 5]);
    std::copy_n(&logits[t * V + 5], 4, &l2[t * 4]);
  }
  cpu::cross_entropy_backward<double>(c1.data(), l1.data(), lse.data(), target, scale, T, 5, 0);
  cpu::cross_entropy_backward<double>(c2.data(), l2.data(), lse.data(), target, scale, T, 4, 5);
  for (int64_t t = 0; t < T; ++t) {
    std::copy_n(&c1[t * 5], 5, &d[t * V]);
    std::copy_n(&c2[t * 4], 4, &d[t * V + 5]);
  }
  expect_gradient(logits, d, loss, "cross-entropy dlogits");
}

}  // namespace
}  // namespace hs
