// The logit transforms of sampling on small hand-made distributions: repetition penalty,
// temperature, top-k, top-p, greedy ties, and the seeded draw.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "eval/sampling.h"

namespace hs {
namespace {

std::vector<float> log_of(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(float(std::log(p)));
  return l;
}

std::vector<int32_t> ids_of(const std::vector<Candidate>& c) {
  std::vector<int32_t> ids;
  for (const auto& x : c) ids.push_back(x.id);
  return ids;
}

TEST(RepetitionPenalty, ShrinksSeenTokensTowardsLessLikely) {
  std::vector<float> l = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 0.0f};
  // Token 0 twice: penalised once, as HF's gather/scatter does.
  apply_repetition_penalty(l, std::vector<int32_t>{0, 1, 0, 5}, 2.0);
  EXPECT_FLOAT_EQ(l[0], 1.0f);   // positive: divided
  EXPECT_FLOAT_EQ(l[1], -2.0f);  // negative: multiplied
  EXPECT_FLOAT_EQ(l[2], 0.5f);   // unseen: unchanged
  EXPECT_FLOAT_EQ(l[3], 3.0f);
  EXPECT_FLOAT_EQ(l[4], -2.0f);
  EXPECT_FLOAT_EQ(l[5], 0.0f);  // zero stays zero
  // A penalty > 1 makes every seen token less likely relative to the unseen ones; < 1 more.
  for (double pen : {1.15, 0.8}) {
    std::vector<float> a = {1.0f, -0.5f, 0.3f}, b = a;
    apply_repetition_penalty(b, std::vector<int32_t>{0, 1}, pen);
    SamplingOptions o;
    o.temperature = 1, o.top_p = 1;
    const auto pa = sampling_candidates(a, o), pb = sampling_candidates(b, o);  // in id order
    for (int id : {0, 1}) {
      const double before = pa[id].prob / pa[2].prob, after = pb[id].prob / pb[2].prob;
      if (pen > 1)
        EXPECT_LT(after, before) << id;
      else
        EXPECT_GT(after, before) << id;
    }
  }
}

TEST(Candidates, SoftmaxWithTemperature) {
  const std::vector<float> l = {1.0f, 2.0f, 0.0f, -1.0f};
  SamplingOptions o;
  o.top_p = 1;
  for (double t : {0.5, 1.0, 2.0}) {
    o.temperature = t;
    const auto c = sampling_candidates(l, o);
    ASSERT_EQ(c.size(), 4u);
    double z = 0;
    for (float v : l) z += std::exp(v / t);
    for (const auto& x : c) EXPECT_NEAR(x.prob, std::exp(l[x.id] / t) / z, 1e-12) << t;
  }
}

TEST(Candidates, TopPKeepsSmallestSetReachingP) {
  // Probabilities 0.4, 0.3, 0.15, 0.1, 0.05 scattered over the ids.
  const auto l = log_of({0.1, 0.4, 0.05, 0.3, 0.15});
  SamplingOptions o;
  o.temperature = 1;
  const std::map<double, std::vector<int32_t>> want = {{0.3, {1}},      // 0.4 already reaches 0.3
                                                       {0.39, {1}},     // still
                                                       {0.41, {1, 3}},  // 0.7
                                                       {0.69, {1, 3}},  // 0.7 again
                                                       {0.71, {1, 3, 4}},    // 0.85
                                                       {0.9, {1, 3, 4, 0}},  // 0.95
                                                       {0.96, {1, 3, 4, 0, 2}}};
  for (const auto& [p, ids] : want) {
    o.top_p = p;
    const auto c = sampling_candidates(l, o);
    EXPECT_EQ(ids_of(c), ids) << "top_p " << p;
    double kept = 0;
    for (int32_t id : ids) kept += std::exp(double(l[id]));
    for (const auto& x : c) EXPECT_NEAR(x.prob, std::exp(double(l[x.id])) / kept, 1e-6);
  }
}

TEST(Candidates, TopPOnALargeFlatVocabulary) {
  // Beyond the first sorted block: 10,000 equal logits (1e-4 each), p just under 0.5 needs
  // 5,000 of them, the lowest ids first.
  const std::vector<float> l(10000, 0.25f);
  SamplingOptions o;
  o.temperature = 1, o.top_p = 0.49995;
  const auto c = sampling_candidates(l, o);
  ASSERT_EQ(c.size(), 5000u);
  for (int32_t i = 0; i < 5000; ++i) EXPECT_EQ(c[i].id, i);
}

TEST(Candidates, TopKThenTopP) {
  const auto l = log_of({0.1, 0.4, 0.05, 0.3, 0.15});
  SamplingOptions o;
  o.temperature = 1, o.top_p = 1, o.top_k = 3;
  EXPECT_EQ(ids_of(sampling_candidates(l, o)), (std::vector<int32_t>{1, 3, 4}));
  // top-p sees the top 3 renormalised (0.47, 0.35, 0.18; the first two sum to 0.82), not the
  // full distribution (where they sum to 0.7).
  o.top_p = 0.83;
  EXPECT_EQ(ids_of(sampling_candidates(l, o)), (std::vector<int32_t>{1, 3, 4}));
  o.top_p = 0.8;
  EXPECT_EQ(ids_of(sampling_candidates(l, o)), (std::vector<int32_t>{1, 3}));
  o.top_k = 1;
  EXPECT_EQ(ids_of(sampling_candidates(l, o)), (std::vector<int32_t>{1}));
}

TEST(Greedy, ArgmaxTakesTheFirstOfEqualMaxima) {
  const std::vector<float> l = {0.0f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(argmax(l), 1);
  SamplingOptions o;
  o.temperature = 0;
  std::vector<float> w = l;
  Rng rng(1);
  EXPECT_EQ(next_token(w, {}, o, rng), 1);
  // top-k 1 at any temperature picks the same token.
  o.temperature = 1.3, o.top_k = 1;
  w = l;
  EXPECT_EQ(next_token(w, {}, o, rng), 1);
  // The penalty acts before the argmax: seen token 1 drops below token 3.
  o.temperature = 0, o.top_k = 0, o.repetition_penalty = 1.5;
  w = l;
  EXPECT_EQ(next_token(w, std::vector<int32_t>{1}, o, rng), 3);
}

TEST(Draw, FrequenciesFollowTheCandidates) {
  const auto l = log_of({0.1, 0.4, 0.05, 0.3, 0.15});
  SamplingOptions o;
  o.temperature = 1, o.top_p = 1;
  Rng rng(2024);
  std::vector<int> count(5, 0);
  const int N = 200000;
  for (int i = 0; i < N; ++i) {
    std::vector<float> w = l;
    ++count[next_token(w, {}, o, rng)];
  }
  const double p[] = {0.1, 0.4, 0.05, 0.3, 0.15};
  for (int i = 0; i < 5; ++i)  // 5 standard deviations of a binomial count
    EXPECT_NEAR(count[i], N * p[i], 5 * std::sqrt(N * p[i] * (1 - p[i]))) << i;
}

TEST(Draw, SameSeedSameTokensOnEveryMachine) {
  // The C++ standard fixes mt19937_64's 10000th output for the default seed.
  std::mt19937_64 g;
  g.discard(9999);
  EXPECT_EQ(g(), 9981545732273789042ull);
  const auto l = log_of({0.1, 0.4, 0.05, 0.3, 0.15});
  SamplingOptions o;
  o.temperature = 0.9, o.top_p = 0.95;
  auto draw = [&](uint64_t seed) {
    Rng rng(seed);
    std::vector<int32_t> out;
    for (int i = 0; i < 32; ++i) {
      std::vector<float> w = l;
      out.push_back(next_token(w, {}, o, rng));
    }
    return out;
  };
  // Recorded once: the stream, the candidate order and the walk over it are all specified, so
  // any machine draws exactly these (token 2 is outside the 0.95 nucleus).
  EXPECT_EQ(draw(7), (std::vector<int32_t>{3, 0, 1, 4, 1, 1, 4, 4, 1, 3, 3, 3, 1, 1, 4, 1,
                                           0, 0, 4, 1, 3, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 1}));
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
}

}  // namespace
}  // namespace hs
