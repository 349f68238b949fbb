// bf16 products on the CPU (ops/cpu/linear_bf16.cpp): the kernel against a float64 product of
// the same bf16-rounded operands, and inference on bf16 checkpoints of the three families with
// bf16 products against the fp32 path (HEADSURGEON_CPU_BF16=0), within bounds derived from the
// rounding of the activations. Skipped on CPUs without AVX512-BF16.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/cpu/decoder.h"
#include "engine/cpu/forward.h"
#include "io/dtype.h"
#include "ops/cpu/ops.h"
#include "random_family_model.h"
#include "util/error.h"

namespace hs {
namespace {

namespace fs = std::filesystem;

#define SKIP_WITHOUT_BF16() \
  if (!cpu::cpu_has_bf16_dot()) GTEST_SKIP() << "this CPU has no AVX512-BF16 instructions"

// Sets HEADSURGEON_CPU_BF16 for a scope (unset for nullopt) and puts the old value back.
class ScopedBf16Env {
 public:
  explicit ScopedBf16Env(std::optional<std::string> v) {
    if (const char* old = std::getenv(kVar)) old_ = old;
    if (v)
      ::setenv(kVar, v->c_str(), 1);
    else
      ::unsetenv(kVar);
  }
  ~ScopedBf16Env() {
    if (old_)
      ::setenv(kVar, old_->c_str(), 1);
    else
      ::unsetenv(kVar);
  }

 private:
  static constexpr const char* kVar = "HEADSURGEON_CPU_BF16";
  std::optional<std::string> old_;
};

// Every shape class of the kernel: rows 1..9 (tiles of 4 and the remainders), K below, at and
// past the 32-element step, outputs not a multiple of 4, a row stride beyond the outputs; on one
// thread and on a team of two (the larger shapes are shared out).
class Bf16Linear : public ::testing::TestWithParam<int> {};

TEST_P(Bf16Linear, EqualsFloat64ProductOfTheRoundedOperands) {
  SKIP_WITHOUT_BF16();
  const int threads = omp_get_max_threads();
  omp_set_num_threads(GetParam());
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0, 1);
  for (int64_t N : {1, 2, 3, 4, 5, 9})
    for (int64_t K : {1, 7, 32, 33, 100, 1000})
      for (int64_t OC : {1, 3, 4, 5, 37, 130})
        for (bool bias : {false, true}) {
          const int64_t ldo = OC + 3;
          std::vector<float> x(N * K), b(OC), out(N * ldo, -7.0f);
          std::vector<uint16_t> W(OC * K);
          for (auto& v : x) v = nd(rng);
          for (auto& v : W) v = f32_to_bf16(nd(rng));
          for (auto& v : b) v = nd(rng);
          cpu::linear_forward_bf16(out.data(), ldo, x.data(), W.data(), bias ? b.data() : nullptr,
                                   N, K, OC);
          for (int64_t i = 0; i < N; ++i) {
            for (int64_t o = 0; o < OC; ++o) {
              double want = bias ? b[o] : 0, mag = std::fabs(want);
              for (int64_t k = 0; k < K; ++k) {
                const double p =
                    double(bf16_to_f32(f32_to_bf16(x[i * K + k]))) * bf16_to_f32(W[o * K + k]);
                want += p;
                mag += std::fabs(p);
              }
              // fp32 accumulation of at most K/32 + 1 products per lane, then 16 lanes and the
              // bias: a relative error of (K/32 + 6) * 2^-24 of the sum of |terms| bounds it. One
              // product missed or counted twice is ~mag/K, far above.
              const double tol = (double(K) / 32 + 6) * std::ldexp(1.0, -24) * mag;
              ASSERT_NEAR(out[i * ldo + o], want, tol)
                  << "N " << N << " K " << K << " OC " << OC << " row " << i << " col " << o;
            }
            for (int64_t o = OC; o < ldo; ++o) ASSERT_EQ(out[i * ldo + o], -7.0f);  // untouched
          }
        }
  omp_set_num_threads(threads);
}

INSTANTIATE_TEST_SUITE_P(Threads, Bf16Linear, ::testing::Values(1, 2));

struct Family {
  const char* name;
  test::FamilySpec spec;
};

void PrintTo(const Family& f, std::ostream* os) { *os << f.name; }

std::vector<Family> families() {
  std::vector<Family> f(3);
  f[0] = {"bloom", {.family = "bloom", .d = 64, .H = 4, .L = 3, .V = 300}};
  f[1] = {"mpt", {.family = "mpt", .d = 64, .H = 4, .L = 3, .V = 300, .biases = false}};
  f[2] = {"falcon", {.family = "falcon", .d = 64, .H = 4, .L = 3, .V = 300, .tied = false}};
  for (auto& x : f) x.spec.dtype = DType::BF16;
  return f;
}

class Bf16Model : public ::testing::TestWithParam<Family> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_BF16();
    dir_ = (fs::temp_directory_path() /
            ("hs_bf16_" + std::string(GetParam().name) + "_" + std::to_string(::getpid())))
               .string();
    test::write_random_family_model(dir_, GetParam().spec, 11);
    std::mt19937 rng(3);
    ids_.resize(48);
    for (auto& v : ids_) v = int32_t(rng() % 300);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::unique_ptr<Model> open(const char* env) {
    ScopedBf16Env e{std::string(env)};
    return std::make_unique<Model>(dir_);
  }
  std::string dir_;
  std::vector<int32_t> ids_;
};

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

double max_diff(const auto& a, const auto& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

// Logits, next-token NLL and head statistics with bf16 products against the fp32 path of the
// same weights. Each product's inputs are rounded to bf16: a relative error up to 2^-9 (~2e-3)
// per element, ~2^-9/sqrt(3) on average, which through 3 blocks and the head is of order 1e-3 of
// the logit scale. Measured (these models, 48 tokens): logits 2.1e-3 (bloom), 3.5e-3 (mpt),
// 3.2e-3 (falcon) of max |logit|; head statistics 2.5e-4 to 4.7e-4 absolute; NLL 4e-5 to 3.7e-4
// relative. Bounds about 3-4x the worst: 1e-2 of max |logit|, 2e-3 absolute on bos mass,
// entropy (nats) and local mass, 1.5e-3 relative on the NLL. That the paths differ at all shows
// that the switch switched.
TEST_P(Bf16Model, ForwardWithinRoundingOfFp32) {
  auto m16 = open("1"), m32 = open("0");
  ASSERT_TRUE(m16->bf16_products());
  ASSERT_FALSE(m32->bf16_products());
  ForwardOptions o;
  o.head_stats = o.logits = o.nll = true;
  const auto a = forward(*m16, {ids_}, o)[0], b = forward(*m32, {ids_}, o)[0];
  const double scale = max_abs(b.logits);
  const double logit_err = max_diff(a.logits, b.logits) / scale;
  const double stat_err =
      std::max({max_diff(a.bos_mass, b.bos_mass), max_diff(a.entropy, b.entropy),
                max_diff(a.local_mass, b.local_mass)});
  const double nll_err = std::fabs(a.nll_sum - b.nll_sum) / b.nll_sum;
  std::printf("%s: logits %.3g of max |logit| %.3g, head statistics %.3g, NLL %.3g\n",
              GetParam().name, logit_err, scale, stat_err, nll_err);
  EXPECT_GT(logit_err, 0) << "bf16 products gave the fp32 path's logits: the switch did nothing";
  EXPECT_LT(logit_err, 1e-2);
  EXPECT_LT(stat_err, 2e-3);
  EXPECT_LT(nll_err, 1.5e-3);
}

// The KV-cache decoder runs the same bf16 products (a row's product does not depend on how many
// rows share the call): its last-position logits equal the full bf16 forward pass's up to the
// attention's order of summation, as in the fp32 decoder's test (test_generate, 1e-5).
TEST_P(Bf16Model, DecoderEqualsForward) {
  auto m = open("1");
  ForwardOptions o;
  o.logits = true;
  const auto full = forward(*m, {ids_}, o)[0].logits;
  Decoder dec(*m, 1, int64_t(ids_.size()));
  const int64_t V = m->config().vocab, P = 20;
  std::vector<int32_t> prefix(ids_.begin(), ids_.begin() + P);
  std::vector<float> got = dec.extend(std::vector<IncrementalDecoder::Feed>{{0, prefix}});
  const double scale = max_abs(full);
  auto err_at = [&](int64_t t) {
    return max_diff(got, std::vector<float>(full.begin() + t * V, full.begin() + (t + 1) * V)) /
           scale;
  };
  EXPECT_LT(err_at(P - 1), 1e-5);
  for (int64_t t = P; t < int64_t(ids_.size()); ++t) {
    std::vector<int32_t> one{ids_[t]};
    got = dec.extend(std::vector<IncrementalDecoder::Feed>{{0, one}});
    ASSERT_LT(err_at(t), 1e-5) << "position " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, Bf16Model, ::testing::ValuesIn(families()),
                         [](const auto& i) { return std::string(i.param.name); });

// HEADSURGEON_CPU_BF16: unset = bf16 products on a bf16 checkpoint (this CPU has them), 0 = the
// fp32 path, 1 = bf16 products, anything else an error; an fp32 checkpoint never uses them.
TEST(Bf16Switch, EnvironmentVariable) {
  SKIP_WITHOUT_BF16();
  const fs::path tmp = fs::temp_directory_path() / ("hs_bf16_env_" + std::to_string(::getpid()));
  test::FamilySpec s{.family = "bloom", .d = 32, .H = 4, .L = 1, .V = 50};
  s.dtype = DType::BF16;
  test::write_random_family_model((tmp / "bf16").string(), s, 1);
  s.dtype = DType::F32;
  test::write_random_family_model((tmp / "f32").string(), s, 1);
  auto uses = [&](const char* dir, std::optional<std::string> env) {
    ScopedBf16Env e(std::move(env));
    return Model((tmp / dir).string()).bf16_products();
  };
  EXPECT_TRUE(uses("bf16", std::nullopt));
  EXPECT_FALSE(uses("bf16", "0"));
  EXPECT_TRUE(uses("bf16", "1"));
  EXPECT_FALSE(uses("f32", std::nullopt));
  EXPECT_FALSE(uses("f32", "1"));
  EXPECT_THROW(uses("bf16", "yes"), Error);
  fs::remove_all(tmp);
}

}  // namespace
}  // namespace hs
