// bf16 products on the CPU (ops/cpu/linear_bf16.cpp): each kernel (AVX512-BF16, AVX2) against a
// float64 product of the same bf16-rounded operands and against each other, and inference on bf16
// checkpoints of the three families with bf16 products of each kernel against the fp32 path
// (HEADSURGEON_CPU_BF16=0), within bounds derived from the rounding of the activations. A kernel's
// tests are skipped on CPUs without its instructions.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <tuple>
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

using cpu::Bf16Kernel;

const char* name(Bf16Kernel k) { return k == Bf16Kernel::avx512 ? "avx512" : "avx2"; }

#define SKIP_WITHOUT(k)  \
  if (!cpu::cpu_runs(k)) \
  GTEST_SKIP() << "this CPU lacks the instructions of the " << name(k) << " kernel"

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

// Operands of a product: x [N, K] fp32, W [OC, K] bf16, bias [OC], all standard normal.
struct Operands {
  std::vector<float> x, b;
  std::vector<uint16_t> W;
  Operands(int64_t N, int64_t K, int64_t OC, std::mt19937& rng) : x(N * K), b(OC), W(OC * K) {
    std::normal_distribution<float> nd(0, 1);
    for (auto& v : x) v = nd(rng);
    for (auto& v : W) v = f32_to_bf16(nd(rng));
    for (auto& v : b) v = nd(rng);
  }
};

// A bound on the error of a kernel's fp32 sum of K products and a bias, relative to the sum of
// their magnitudes: every product of two bf16 is exact in fp32, so only the additions round, by
// at most 2^-24 each. avx512 sums at most K/32 + 1 dot-product steps per lane, then 16 lanes and
// the bias; avx2 at most K/8 + 2 products per lane (two per 16-element step), then 8 lanes and
// the bias: (K/32 + 6) and (K/8 + 6) roundings bound either. One product missed or counted twice
// is ~mag/K, far above.
double rel_bound(Bf16Kernel k, int64_t K) {
  return (double(K) / (k == Bf16Kernel::avx512 ? 32 : 8) + 6) * std::ldexp(1.0, -24);
}

struct LinearCase {
  Bf16Kernel kernel;
  int threads;
};

void PrintTo(const LinearCase& c, std::ostream* os) {
  *os << name(c.kernel) << ", " << c.threads << " thread(s)";
}

// Every shape class of the kernels: rows 1..9 (tiles of 4 and the remainders), K below, at and
// past the 8-, 16- and 32-element steps, outputs not a multiple of the tile widths (3, 4), a row
// stride beyond the outputs; on one thread and on a team of two (the larger shapes are shared
// out).
class Bf16Linear : public ::testing::TestWithParam<LinearCase> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT(GetParam().kernel);
    threads_ = omp_get_max_threads();
    omp_set_num_threads(GetParam().threads);
  }
  void TearDown() override {
    if (threads_) omp_set_num_threads(threads_);
  }
  int threads_ = 0;
};

TEST_P(Bf16Linear, EqualsFloat64ProductOfTheRoundedOperands) {
  const Bf16Kernel kernel = GetParam().kernel;
  std::mt19937 rng(7);
  for (int64_t N = 1; N <= 9; ++N)
    for (int64_t K : {1, 7, 8, 15, 16, 17, 32, 33, 100, 1000})
      for (int64_t OC : {1, 2, 3, 4, 5, 37, 130})
        for (bool bias : {false, true}) {
          const int64_t ldo = OC + 3;
          const Operands o(N, K, OC, rng);
          std::vector<float> out(N * ldo, -7.0f);
          cpu::linear_forward_bf16(out.data(), ldo, o.x.data(), o.W.data(),
                                   bias ? o.b.data() : nullptr, N, K, OC, kernel);
          for (int64_t i = 0; i < N; ++i) {
            for (int64_t c = 0; c < OC; ++c) {
              double want = bias ? o.b[c] : 0, mag = std::fabs(want);
              for (int64_t k = 0; k < K; ++k) {
                const double p =
                    double(bf16_to_f32(f32_to_bf16(o.x[i * K + k]))) * bf16_to_f32(o.W[c * K + k]);
                want += p;
                mag += std::fabs(p);
              }
              ASSERT_NEAR(out[i * ldo + c], want, rel_bound(kernel, K) * mag)
                  << "N " << N << " K " << K << " OC " << OC << " row " << i << " col " << c;
            }
            for (int64_t c = OC; c < ldo; ++c) ASSERT_EQ(out[i * ldo + c], -7.0f);  // untouched
          }
        }
}

// Each output is one dot product in a fixed order: a row's result is the same, bit for bit,
// alone, among 9 rows, and on one thread or two (the decoder and the forward pass rely on it).
TEST_P(Bf16Linear, RowIndependentOfBatchAndThreads) {
  const Bf16Kernel kernel = GetParam().kernel;
  std::mt19937 rng(5);
  const int64_t N = 9, K = 2048, OC = 307;  // shared out: N * K * OC > 2^18, blocks > 1
  const Operands o(N, K, OC, rng);
  std::vector<float> all(N * OC), one(OC);
  cpu::linear_forward_bf16(all.data(), OC, o.x.data(), o.W.data(), o.b.data(), N, K, OC, kernel);
  omp_set_num_threads(3 - GetParam().threads);
  for (int64_t i = 0; i < N; ++i) {
    cpu::linear_forward_bf16(one.data(), OC, o.x.data() + i * K, o.W.data(), o.b.data(), 1, K, OC,
                             kernel);
    for (int64_t c = 0; c < OC; ++c)
      ASSERT_EQ(one[c], all[i * OC + c]) << "row " << i << " col " << c;
  }
}

// The activations are rounded to bf16 as f32_to_bf16 rounds (nearest even, NaN kept NaN), seen
// through a product with K = 1 and W = 1: ties both ways, values that round into the exponent or
// to infinity, infinities, zeros, NaNs (one whose payload is only in the low half), and random
// values over all exponents; 1,000 of them, through both the 16-wide path and the tail.
// Subnormals only for avx2: vcvtneps2bf16 and vdpbf16ps flush them to zero.
TEST_P(Bf16Linear, RoundsActivationsAsF32ToBf16) {
  const Bf16Kernel kernel = GetParam().kernel;
  auto f = [](uint32_t u) { return std::bit_cast<float>(u); };
  std::vector<float> x = {f(0x3f808000), f(0x3f818000), f(0x3f80ffff), f(0x3f7fffff),
                          f(0x7f7fffff), f(0xff7fffff), f(0x7f800000), f(0xff800000),
                          0.0f,          -0.0f,         f(0x7fc00000), f(0x7f800001),
                          f(0xbf808001), f(0xc0008000), 1e-30f,        -3.3e38f};
  if (kernel == Bf16Kernel::avx2)
    for (uint32_t u : {0x00000001u, 0x00008000u, 0x00018000u, 0x807fffffu}) x.push_back(f(u));
  std::mt19937 rng(9);
  while (x.size() < 1000) {
    const float v = f(rng());
    if (std::isfinite(v) && std::fpclassify(v) != FP_SUBNORMAL) x.push_back(v);
  }
  const int64_t N = int64_t(x.size());
  const uint16_t one = f32_to_bf16(1.0f);
  std::vector<float> out(N);
  cpu::linear_forward_bf16(out.data(), 1, x.data(), &one, nullptr, N, 1, 1, kernel);
  for (int64_t i = 0; i < N; ++i) {
    const float want = bf16_to_f32(f32_to_bf16(x[i]));
    if (std::isnan(want))
      ASSERT_TRUE(std::isnan(out[i])) << "x " << x[i];
    else
      ASSERT_EQ(out[i], want) << "x " << x[i] << " bits " << std::bit_cast<uint32_t>(x[i]);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Kernels, Bf16Linear,
    ::testing::Values(LinearCase{Bf16Kernel::avx512, 1}, LinearCase{Bf16Kernel::avx512, 2},
                      LinearCase{Bf16Kernel::avx2, 1}, LinearCase{Bf16Kernel::avx2, 2}),
    [](const auto& i) {
      return std::string(name(i.param.kernel)) + "_" + std::to_string(i.param.threads) + "threads";
    });

// Where a CPU has both, the kernels agree within the sum of their bounds against the exact
// product of the same rounded operands (they differ only in the order of the fp32 sums), on the
// shapes of a bloom-560m block and a few odd ones.
TEST(Bf16Kernels, Avx2AgreesWithAvx512) {
  SKIP_WITHOUT(Bf16Kernel::avx512);
  SKIP_WITHOUT(Bf16Kernel::avx2);
  std::mt19937 rng(13);
  for (auto [N, K, OC] : {std::tuple<int64_t, int64_t, int64_t>{7, 1024, 3072},
                          {5, 4096, 130},
                          {9, 333, 101},
                          {1, 1, 1}})
    for (bool bias : {false, true}) {
      const Operands o(N, K, OC, rng);
      std::vector<float> a(N * OC), b(N * OC);
      const float* bp = bias ? o.b.data() : nullptr;
      cpu::linear_forward_bf16(a.data(), OC, o.x.data(), o.W.data(), bp, N, K, OC,
                               Bf16Kernel::avx2);
      cpu::linear_forward_bf16(b.data(), OC, o.x.data(), o.W.data(), bp, N, K, OC,
                               Bf16Kernel::avx512);
      const double rel = rel_bound(Bf16Kernel::avx2, K) + rel_bound(Bf16Kernel::avx512, K);
      for (int64_t i = 0; i < N; ++i)
        for (int64_t c = 0; c < OC; ++c) {
          double mag = bias ? std::fabs(o.b[c]) : 0;
          for (int64_t k = 0; k < K; ++k)
            mag += std::fabs(double(bf16_to_f32(f32_to_bf16(o.x[i * K + k]))) *
                             bf16_to_f32(o.W[c * K + k]));
          ASSERT_NEAR(a[i * OC + c], b[i * OC + c], rel * mag)
              << "N " << N << " K " << K << " OC " << OC << " row " << i << " col " << c;
        }
    }
}

// A family's random model, run with one kernel (selected as the user would, by
// HEADSURGEON_CPU_BF16: 1 takes avx512 on a CPU that has it, avx2 forces the other).
struct Family {
  std::string name;
  test::FamilySpec spec;
  Bf16Kernel kernel;
  const char* env;
};

void PrintTo(const Family& f, std::ostream* os) { *os << f.name; }

std::vector<Family> families() {
  std::vector<Family> f;
  for (auto [kernel, env] : {std::pair{Bf16Kernel::avx512, "1"}, {Bf16Kernel::avx2, "avx2"}}) {
    const std::string k = std::string("_") + name(kernel);
    f.push_back({"bloom" + k, {.family = "bloom", .d = 64, .H = 4, .L = 3, .V = 300}, kernel, env});
    f.push_back({"mpt" + k,
                 {.family = "mpt", .d = 64, .H = 4, .L = 3, .V = 300, .biases = false},
                 kernel,
                 env});
    f.push_back({"falcon" + k,
                 {.family = "falcon", .d = 64, .H = 4, .L = 3, .V = 300, .tied = false},
                 kernel,
                 env});
  }
  for (auto& x : f) x.spec.dtype = DType::BF16;
  return f;
}

class Bf16Model : public ::testing::TestWithParam<Family> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT(GetParam().kernel);
    dir_ = (fs::temp_directory_path() /
            ("hs_bf16_" + GetParam().name + "_" + std::to_string(::getpid())))
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
// relative; with the AVX2 kernel the same to two digits but falcon's (logits 3.0e-3, NLL
// 4.2e-4). Bounds about 3-4x the worst: 1e-2 of max |logit|, 2e-3 absolute on bos mass,
// entropy (nats) and local mass, 1.5e-3 relative on the NLL. That the paths differ at all shows
// that the switch switched.
TEST_P(Bf16Model, ForwardWithinRoundingOfFp32) {
  auto m16 = open(GetParam().env), m32 = open("0");
  ASSERT_EQ(m16->bf16_kernel(), GetParam().kernel);
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
              GetParam().name.c_str(), logit_err, scale, stat_err, nll_err);
  EXPECT_GT(logit_err, 0) << "bf16 products gave the fp32 path's logits: the switch did nothing";
  EXPECT_LT(logit_err, 1e-2);
  EXPECT_LT(stat_err, 2e-3);
  EXPECT_LT(nll_err, 1.5e-3);
}

// The KV-cache decoder runs the same bf16 products (a row's product does not depend on how many
// rows share the call): its last-position logits equal the full bf16 forward pass's up to the
// attention's order of summation, as in the fp32 decoder's test (test_generate, 1e-5).
TEST_P(Bf16Model, DecoderEqualsForward) {
  auto m = open(GetParam().env);
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
                         [](const auto& i) { return i.param.name; });

// HEADSURGEON_CPU_BF16: unset = bf16 products with the best kernel on a bf16 checkpoint, 0 = the
// fp32 path, 1 = bf16 products with the best kernel, avx2 = with the AVX2 kernel, anything else
// an error; an fp32 checkpoint never uses them.
TEST(Bf16Switch, EnvironmentVariable) {
  const Bf16Kernel best = cpu::best_bf16_kernel();
  if (best == Bf16Kernel::none) GTEST_SKIP() << "this CPU runs neither kernel";
  const fs::path tmp = fs::temp_directory_path() / ("hs_bf16_env_" + std::to_string(::getpid()));
  test::FamilySpec s{.family = "bloom", .d = 32, .H = 4, .L = 1, .V = 50};
  s.dtype = DType::BF16;
  test::write_random_family_model((tmp / "bf16").string(), s, 1);
  s.dtype = DType::F32;
  test::write_random_family_model((tmp / "f32").string(), s, 1);
  auto uses = [&](const char* dir, std::optional<std::string> env) {
    ScopedBf16Env e(std::move(env));
    return Model((tmp / dir).string()).bf16_kernel();
  };
  EXPECT_EQ(uses("bf16", std::nullopt), best);
  EXPECT_EQ(uses("bf16", "0"), Bf16Kernel::none);
  EXPECT_EQ(uses("bf16", "1"), best);
  if (cpu::cpu_runs(Bf16Kernel::avx2)) {
    EXPECT_EQ(uses("bf16", "avx2"), Bf16Kernel::avx2);
  }
  EXPECT_EQ(uses("f32", std::nullopt), Bf16Kernel::none);
  EXPECT_EQ(uses("f32", "1"), Bf16Kernel::none);
  EXPECT_EQ(uses("f32", "avx2"), Bf16Kernel::none);
  try {
    uses("bf16", "yes");
    ADD_FAILURE() << "HEADSURGEON_CPU_BF16=yes was accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "HEADSURGEON_CPU_BF16: must be 0, 1 or avx2, not 'yes'");
  }
  fs::remove_all(tmp);
}

}  // namespace
}  // namespace hs
