// The optimized CPU forward pass against a plain float64 reference written from DESIGN §2, on
// random models whose shapes the golden data does not cover (non-power-of-two head counts, the
// post-LayerNorm residual variant, half-precision weights).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "engine/cpu/forward.h"
#include "io/safetensors.h"
#include "model/alibi.h"
#include "ops/cpu/ops.h"
#include "random_bloom.h"

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

// ---- a plain float64 BLOOM, written as directly from the specification as possible ----------

struct RefModel {
  int64_t d, H, L, V;
  bool post_ln;
  std::map<std::string, std::vector<double>> w;  // canonical names
};

using Mat = std::vector<double>;

Mat ref_ln(const Mat& x, int64_t T, int64_t d, const Mat& g, const Mat& b) {
  Mat y(x.size());
  for (int64_t t = 0; t < T; ++t) {
    double mu = 0, var = 0;
    for (int64_t i = 0; i < d; ++i) mu += x[t * d + i] / d;
    for (int64_t i = 0; i < d; ++i) var += (x[t * d + i] - mu) * (x[t * d + i] - mu) / d;
    for (int64_t i = 0; i < d; ++i)
      y[t * d + i] = (x[t * d + i] - mu) / std::sqrt(var + 1e-5) * g[i] + b[i];
  }
  return y;
}

Mat ref_linear(const Mat& x, int64_t T, int64_t in, const Mat& W, const Mat& b, int64_t out) {
  Mat y(T * out);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double s = b.empty() ? 0 : b[o];
      for (int64_t i = 0; i < in; ++i) s += x[t * in + i] * W[o * in + i];
      y[t * out + o] = s;
    }
  return y;
}

struct RefOut {
  Mat logits;
  std::vector<double> bos, ent, loc;  // [L*H]
};

RefOut ref_forward(const RefModel& m, const std::vector<int32_t>& ids) {
  const int64_t T = int64_t(ids.size()), d = m.d, H = m.H, hd = d / H;
  auto W = [&](const std::string& n) -> const Mat& { return m.w.at(n); };
  Mat x(T * d);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < d; ++i) x[t * d + i] = W("word_embeddings.weight")[ids[t] * d + i];
  x = ref_ln(x, T, d, W("word_embeddings_layernorm.weight"), W("word_embeddings_layernorm.bias"));
  const auto slopes = alibi_slopes(H);
  RefOut r;
  for (int64_t l = 0; l < m.L; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    Mat a = ref_ln(x, T, d, W(p + "input_layernorm.weight"), W(p + "input_layernorm.bias"));
    Mat qkv = ref_linear(a, T, d, W(p + "self_attention.query_key_value.weight"),
                         W(p + "self_attention.query_key_value.bias"), 3 * d);
    Mat ctx(T * d, 0);
    for (int64_t h = 0; h < H; ++h) {
      double bos = 0, ent = 0, loc = 0;
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> s(t + 1);
        double mx = -1e300, z = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int64_t i = 0; i < hd; ++i)
            dot += qkv[t * 3 * d + h * 3 * hd + i] * qkv[j * 3 * d + h * 3 * hd + hd + i];
          s[j] = dot / std::sqrt(double(hd)) + double(slopes[h]) * j;
          mx = std::max(mx, s[j]);
        }
        for (auto& v : s) z += (v = std::exp(v - mx));
        for (int64_t j = 0; j <= t; ++j) {
          s[j] /= z;
          for (int64_t i = 0; i < hd; ++i)
            ctx[t * d + h * hd + i] += s[j] * qkv[j * 3 * d + h * 3 * hd + 2 * hd + i];
          ent -= s[j] * std::log(std::max(s[j], 1e-10));
          if (j >= t - 2) loc += s[j];
        }
        bos += s[0];
      }
      r.bos.push_back(bos / T);
      r.ent.push_back(ent / T);
      r.loc.push_back(loc / T);
    }
    Mat o = ref_linear(ctx, T, d, W(p + "self_attention.dense.weight"),
                       W(p + "self_attention.dense.bias"), d);
    const Mat& res1 = m.post_ln ? a : x;
    for (int64_t i = 0; i < T * d; ++i) o[i] += res1[i];
    x = o;
    Mat b = ref_ln(x, T, d, W(p + "post_attention_layernorm.weight"),
                   W(p + "post_attention_layernorm.bias"));
    Mat h1 = ref_linear(b, T, d, W(p + "mlp.dense_h_to_4h.weight"), W(p + "mlp.dense_h_to_4h.bias"),
                        4 * d);
    for (auto& v : h1)
      v = 0.5 * v * (1 + std::tanh(0.7978845608028654 * v * (1 + 0.044715 * v * v)));
    Mat o2 = ref_linear(h1, T, 4 * d, W(p + "mlp.dense_4h_to_h.weight"),
                        W(p + "mlp.dense_4h_to_h.bias"), d);
    const Mat& res2 = m.post_ln ? b : x;
    for (int64_t i = 0; i < T * d; ++i) o2[i] += res2[i];
    x = o2;
  }
  x = ref_ln(x, T, d, W("ln_f.weight"), W("ln_f.bias"));
  r.logits = ref_linear(x, T, d, W("word_embeddings.weight"), {}, m.V);
  return r;
}

// Writes a random checkpoint (prefix-less names, given dtype) and returns the fp64 values as
// stored (i.e. after rounding to the dtype), so the reference sees exactly what we load.
RefModel write_random(const fs::path& dir, int64_t d, int64_t H, int64_t L, int64_t V, bool post_ln,
                      DType dt, uint32_t seed) {
  fs::create_directories(dir);
  RefModel m{d, H, L, V, post_ln, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  const auto specs = hs::test::random_bloom_specs(d, L, V);
  std::vector<std::vector<std::byte>> bufs;
  std::vector<TensorToWrite> tw;
  for (auto& [name, shape, scale, offset] : specs) {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    std::vector<float> v(n);
    for (auto& x : v) x = offset + scale * nd(rng);
    std::vector<std::byte> raw(n * dtype_size(dt));
    convert_from_f32(v.data(), n, dt, raw.data());
    std::vector<float> back(n);
    convert_to_f32(dt, raw.data(), n, back.data());
    m.w[name] = Mat(back.begin(), back.end());
    bufs.push_back(std::move(raw));
    tw.push_back({name, dt, shape, bufs.back().data(), bufs.back().size()});
  }
  write_safetensors((dir / "model.safetensors").string(), tw);
  std::ofstream(dir / "config.json") << bloom_config(d, H, L, V, post_ln).to_json().dump(2);
  return m;
}

struct Case {
  int64_t d, H, L, V;
  bool post_ln;
  DType dt;
  int64_t T;
};

class ReferenceForward : public ::testing::TestWithParam<Case> {};

TEST_P(ReferenceForward, MatchesFloat64Reference) {
  const Case c = GetParam();
  const fs::path dir = fs::temp_directory_path() /
                       ("hs_ref_" + std::to_string(::getpid()) + "_" + std::to_string(c.H) + "_" +
                        std::to_string(c.post_ln) + "_" + dtype_name(c.dt));
  const RefModel ref = write_random(dir, c.d, c.H, c.L, c.V, c.post_ln, c.dt, 1234);
  std::mt19937 rng(99);
  std::vector<int32_t> ids(c.T);
  for (auto& v : ids) v = int32_t(rng() % c.V);
  const RefOut want = ref_forward(ref, ids);

  for (int64_t cache : {int64_t(1) << 40, int64_t(0)}) {  // resident and streamed
    Model model(dir.string(), ModelOptions{cache});
    ForwardOptions o;
    o.logits = o.head_stats = true;
    const auto got = forward(model, {ids}, o);
    std::vector<float> w(want.logits.begin(), want.logits.end());
    double num = 0, den = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      num = std::max(num, std::abs(double(got[0].logits[i]) - want.logits[i]));
      den = std::max(den, std::abs(want.logits[i]));
    }
    EXPECT_LE(num / den, 1e-4) << "logits, max-abs-error / max-abs-value";
    for (size_t k = 0; k < want.bos.size(); ++k) {
      EXPECT_NEAR(got[0].bos_mass[k], want.bos[k], 1e-5) << k;
      EXPECT_NEAR(got[0].entropy[k], want.ent[k], 1e-5) << k;
      EXPECT_NEAR(got[0].local_mass[k], want.loc[k], 1e-5) << k;
    }
  }
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ReferenceForward,
    ::testing::Values(Case{48, 12, 2, 300, true, DType::F32, 37},   // 12 heads, post-LN
                      Case{48, 6, 2, 301, false, DType::BF16, 20},  // 6 heads, bf16 weights
                      Case{40, 5, 1, 97, true, DType::F16, 9},      // 5 heads, fp16 weights
                      Case{32, 1, 2, 64, false, DType::F32, 1}));   // one head, one token

}  // namespace
}  // namespace hs
