// The CUDA backend against its CPU twins: every kernel on fresh random inputs (outputs poisoned
// with NaN first, so an element the kernel forgets fails), and the whole engine against the
// golden data and the CPU engine. Skipped, saying why, where no usable GPU is present (CI).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <tuple>

#include "backend/backend.h"
#include "cuda/gemm.h"
#include "cuda/runtime.h"
#include "cuda_test_util.h"
#include "diagnose/run.h"
#include "engine/cpu/block.h"
#include "eval/generate.h"
#include "eval/sampling.h"
#include "golden_data.h"
#include "ops/cpu/ops.h"
#include "ops/cuda/ops.cuh"
#include "random_bloom.h"
#include "random_family_model.h"
#include "test_util.h"

namespace hs {
namespace {

using cuda::DeviceBuffer;
using test::floats;
using test::id_rows;
using test::rel_err;

// Kernels run in fp32 here (W = float): the tolerances are fp32 rounding over the reductions
// involved, relative to the output's scale.
constexpr double kF32Tol = 2e-6;

// LayerNorm with the residual update fused in: both residual variants, with biases (BLOOM,
// Falcon) and without (MPT's no_bias: null residual bias and null LayerNorm bias).
TEST_F(Gpu, LayerNormMatchesCpu) {
  std::mt19937 rng(test_seed());
  // 7 rows: 1024 threads per row; 100 rows: 64-256. Rows of 5000 with 100 of them go past 16
  // values per thread: the three-pass kernel.
  for (int N : {7, 100})
    for (int d : {64, 300, 2048, 5000}) {
      const auto x0 = randn(rng, size_t(N) * d, 2, 1), y = randn(rng, size_t(N) * d),
                 bias = randn(rng, d), src = randn(rng, size_t(N) * d), w = randn(rng, d, 0.2f, 1),
                 b = randn(rng, d, 0.2f);
      for (bool biases : {true, false})
        for (bool post : {false, true}) {
          // CPU: x = (post ? src : x) + y [+ bias]; out = LN(x) [+ b].
          std::vector<float> xr = post ? src : x0, outr(size_t(N) * d);
          for (int i = 0; i < N; ++i)
            for (int c = 0; c < d; ++c)
              xr[size_t(i) * d + c] +=
                  biases ? y[size_t(i) * d + c] + bias[c] : y[size_t(i) * d + c];
          cpu::layernorm_forward<float>(outr.data(), nullptr, nullptr, xr.data(), w.data(),
                                        biases ? b.data() : nullptr, N, d, 1e-5f);
          DeviceBuffer X = upload(x0), Y = upload(y), Bi = upload(bias), S = upload(src),
                       Wd = upload(w), Bd = upload(b), O = poisoned(size_t(N) * d * 4),
                       O32 = poisoned(size_t(N) * d * 4);
          cuda::layernorm_forward<float>(
              {X.as<float>(), Y.as<float>(), biases ? Bi.as<float>() : nullptr,
               post ? S.as<float>() : nullptr, Wd.as<float>(), biases ? Bd.as<float>() : nullptr,
               O.as<float>(), O32.as<float>(), N, d, 1e-5f},
              nullptr);
          const std::string where = "N=" + std::to_string(N) + " d=" + std::to_string(d) +
                                    " biases=" + std::to_string(biases) +
                                    " post=" + std::to_string(post);
          EXPECT_LE(rel_err(download<float>(X, xr.size()), xr), kF32Tol) << "residual " << where;
          EXPECT_LE(rel_err(download<float>(O, outr.size()), outr), kF32Tol) << "LN " << where;
          EXPECT_EQ(download<float>(O, outr.size()), download<float>(O32, outr.size())) << where;
        }
    }
}

// Both GELU forms (tanh: BLOOM; erf: MPT, Falcon), with the bias fused and without one.
TEST_F(Gpu, GeluMatchesCpu) {
  std::mt19937 rng(test_seed() + 1);
  const int N = 5, C = 1000;
  const auto h = randn(rng, size_t(N) * C, 2), bias = randn(rng, C);
  for (Gelu kind : {Gelu::tanh, Gelu::erf})
    for (bool with_bias : {true, false}) {
      std::vector<float> ref(h.size());
      for (size_t i = 0; i < h.size(); ++i) ref[i] = with_bias ? h[i] + bias[i % C] : h[i];
      cpu::gelu_forward<float>(ref.data(), ref.data(), int64_t(ref.size()), kind);
      DeviceBuffer H = upload(h), B = upload(bias), O = poisoned(h.size() * 4);
      cuda::gelu_forward<float>(O.as<float>(), H.as<float>(), with_bias ? B.as<float>() : nullptr,
                                N, C, kind, nullptr);
      EXPECT_LE(rel_err(download<float>(O, ref.size()), ref), kF32Tol)
          << (kind == Gelu::erf ? "erf" : "tanh") << " bias=" << with_bias;
    }
}

// qkv_split + alibi_attention_forward over several packed sequences, some with keys already in
// the cache (a decoding step; up to 256 rows one per warp, 300 rows four per warp), against the
// CPU twin per sequence: the queries left in qkv, the cache, context, probabilities and per-head
// statistics, in every family's conventions.
TEST_F(Gpu, AttentionMatchesCpu) {
  std::mt19937 rng(test_seed() + 2);
  struct Case {
    int H, hd;
    std::vector<int> T, past;
  };
  struct Convention {
    const char* name;
    AlibiParams alibi;
    float clip;
    bool bias;
  };
  const Convention conventions[] = {
      {"bloom", AlibiParams{}, 0, true},
      {"mpt: softmax_scale, clip_qkv, no bias", AlibiParams{0.3, false, false, false}, 1.0f, false},
      {"falcon", AlibiParams{0, true, true, false}, 0, true},
      {"falcon as HF eager", AlibiParams{0, true, true, true}, 0, true}};
  for (const Convention& cv : conventions)
    for (const Case& cs : std::vector<Case>{{2, 8, {1, 5}, {0, 3}},
                                            {3, 40, {33, 70, 2}, {0, 0, 40}},
                                            {4, 64, {100}, {0}},
                                            {2, 128, {65, 3}, {0, 70}},
                                            {1, 200, {40}, {0}},
                                            {1, 64, {300}, {0}}}) {
      const int H = cs.H, hd = cs.hd, d = H * hd, B = int(cs.T.size());
      int N = 0, cap = 0;
      for (int b = 0; b < B; ++b) N += cs.T[b], cap = std::max(cap, cs.past[b] + cs.T[b]);
      const auto qkv = randn(rng, size_t(N) * 3 * d), bias = randn(rng, size_t(3) * d, 0.3f);
      // Slopes of a non-power-of-two head count: bf16 rounding (Falcon) changes them.
      std::vector<float> slopes(H);
      for (int h = 0; h < H; ++h) slopes[h] = std::pow(2.0f, -8.0f * float(h + 1) / float(H + 1));
      // The caches: earlier keys and values random, every other position NaN.
      std::vector<float> kc(size_t(B) * H * cap * hd, NAN), vc = kc;
      for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
          for (size_t i = 0; i < size_t(cs.past[b]) * hd; ++i) {
            const size_t at = (size_t(b) * H + h) * cap * hd + i;
            kc[at] = randn(rng, 1)[0];
            vc[at] = randn(rng, 1)[0];
          }
      std::vector<int32_t> row_seq, q_row0, n_rows, past(cs.past.begin(), cs.past.end());
      std::vector<int64_t> probs_off;
      int64_t probs_total = 0;
      for (int b = 0; b < B; ++b) {
        q_row0.push_back(int32_t(row_seq.size()));
        n_rows.push_back(cs.T[b]);
        for (int t = 0; t < cs.T[b]; ++t) row_seq.push_back(b);
        probs_off.push_back(probs_total);
        probs_total += int64_t(H) * cs.T[b] * (cs.past[b] + cs.T[b]);
      }
      DeviceBuffer QKV = upload(qkv), Bias = upload(bias), Sl = upload(slopes),
                   RS = upload(row_seq), Q0 = upload(q_row0), NR = upload(n_rows),
                   P0 = upload(past), Off = upload(probs_off), K = upload(kc), Vb = upload(vc),
                   Ctx = poisoned(size_t(N) * d * 4), Stats = poisoned(size_t(3) * H * N * 4),
                   Lse = poisoned(size_t(H) * N * 4), Probs(size_t(probs_total) * 4);
      cuda::check(cudaMemset(Probs.as<void>(), 0, Probs.bytes()), "memset");
      const cuda::RowMap m{
          RS.as<int32_t>(), Q0.as<int32_t>(), NR.as<int32_t>(), P0.as<int32_t>(), N, B};
      cuda::qkv_split(QKV.as<float>(), K.as<float>(), Vb.as<float>(),
                      cv.bias ? Bias.as<float>() : nullptr, cv.clip, m, H, hd, cap, nullptr);
      cuda::alibi_attention_forward<float>(
          Ctx.as<float>(), Stats.as<float>(), Probs.as<float>(), Off.as<int64_t>(), QKV.as<float>(),
          K.as<float>(), Vb.as<float>(), Sl.as<float>(), cv.alibi, m, H, hd, cap,
          *std::max_element(cs.T.begin(), cs.T.end()), nullptr, Lse.as<float>());
      const auto got_qkv = download<float>(QKV, qkv.size());
      const auto got_k = download<float>(K, kc.size()), got_v = download<float>(Vb, vc.size());
      const auto ctx = download<float>(Ctx, size_t(N) * d);
      const auto stats = download<float>(Stats, size_t(3) * H * N);
      const auto probs = download<float>(Probs, size_t(probs_total));
      const auto lse = download<float>(Lse, size_t(H) * N);
      // The CPU block's order: bias, then the clamp, on all of q, k and v.
      std::vector<float> x = qkv;
      for (int g = 0; g < N; ++g)
        for (int c = 0; c < 3 * d; ++c) {
          float& v = x[size_t(g) * 3 * d + c];
          if (cv.bias) v += bias[c];
          if (cv.clip > 0) v = std::clamp(v, -cv.clip, cv.clip);
        }
      for (int b = 0; b < B; ++b) {
        const int T = cs.T[b], P = cs.past[b], W = P + T;
        const std::string where = std::string(cv.name) + " H=" + std::to_string(H) +
                                  " hd=" + std::to_string(hd) + " T=" + std::to_string(T) +
                                  " past=" + std::to_string(P);
        // The new keys and values into the host copy of the cache, queries compared in place.
        std::vector<float> qs, gq;
        for (int t = 0; t < T; ++t)
          for (int h = 0; h < H; ++h)
            for (int e = 0; e < hd; ++e) {
              const size_t row = size_t(q_row0[b] + t) * 3 * d;
              const size_t at = ((size_t(b) * H + h) * cap + P + t) * hd + e;
              kc[at] = x[row + qkv_row(h, 1, hd) + e];
              vc[at] = x[row + qkv_row(h, 2, hd) + e];
              qs.push_back(x[row + qkv_row(h, 0, hd) + e]);
              gq.push_back(got_qkv[row + qkv_row(h, 0, hd) + e]);
            }
        EXPECT_EQ(gq, qs) << where << ": queries in qkv";
        const size_t c0 = size_t(b) * H * cap * hd, cn = size_t(H) * cap * hd;
        for (size_t i = 0; i < cn; ++i)
          if (int(i / hd % cap) < W) {
            ASSERT_EQ(got_k[c0 + i], kc[c0 + i]) << where << ": key cache at " << i;
            ASSERT_EQ(got_v[c0 + i], vc[c0 + i]) << where << ": value cache at " << i;
          }
        cpu::AttnInput<float> in = cpu::fused_qkv(x.data() + size_t(q_row0[b]) * 3 * d, T, H, hd);
        in.k = kc.data() + c0;
        in.v = vc.data() + c0;
        in.ldkv = hd;
        in.hskv = int64_t(cap) * hd;
        in.past = P;
        std::vector<float> ref_ctx(size_t(T) * d), ref_probs(size_t(H) * T * W);
        std::vector<double> sb(H), se(H), sl(H);
        cpu::HeadStatSums sums{sb.data(), se.data(), sl.data()};
        cpu::alibi_attention_forward<float>(ref_ctx.data(), d, ref_probs.data(), &sums, in,
                                            slopes.data(), cv.alibi, H, hd);
        const std::vector<float> got_ctx(ctx.begin() + int64_t(q_row0[b]) * d,
                                         ctx.begin() + int64_t(q_row0[b] + T) * d);
        EXPECT_LE(rel_err(got_ctx, ref_ctx), 1e-5) << where;
        const std::vector<float> got_probs(probs.begin() + probs_off[b],
                                           probs.begin() + probs_off[b] + int64_t(H) * T * W);
        EXPECT_LE(rel_err(got_probs, ref_probs), 1e-5) << where;
        // Log-sum-exp of each row's scores, in double: float scores of |s| up to ~20 are good
        // to ~1e-6, so 1e-5 of max(1, |lse|).
        const double scale = alibi_scale<double>(cv.alibi, hd);
        for (int h = 0; h < H; ++h)
          for (int t = 0; t < T; ++t) {
            const int pos = P + t;
            const float* q = x.data() + size_t(q_row0[b] + t) * 3 * d + qkv_row(h, 0, hd);
            std::vector<double> sc(size_t(pos) + 1);
            for (int j = 0; j <= pos; ++j) {
              const float* k = kc.data() + ((size_t(b) * H + h) * cap + j) * hd;
              double dot = 0;
              for (int e = 0; e < hd; ++e) dot += double(q[e]) * k[e];
              sc[j] = alibi_score<double>(dot, scale, slopes[h], j, cv.alibi);
            }
            const double mx = *std::max_element(sc.begin(), sc.end());
            double sum = 0;
            for (double v : sc) sum += std::exp(v - mx);
            const double want = mx + std::log(sum);
            EXPECT_NEAR(lse[size_t(h) * N + q_row0[b] + t], want,
                        1e-5 * std::max(1.0, std::abs(want)))
                << where << " lse, head " << h << " row " << t;
          }
        for (int h = 0; h < H; ++h) {
          double g[3] = {0, 0, 0};
          for (int k = 0; k < 3; ++k)
            for (int t = 0; t < T; ++t) g[k] += stats[(size_t(k) * H + h) * N + q_row0[b] + t];
          // Sums over T rows of values in [0, 1] (entropy up to log W): 1e-5 relative to T.
          EXPECT_NEAR(g[0], sb[h], 1e-5 * T) << where << " bos, head " << h;
          EXPECT_NEAR(g[1], se[h], 1e-5 * T * std::max(1.0, std::log(double(W))))
              << where << " entropy, head " << h;
          EXPECT_NEAR(g[2], sl[h], 1e-5 * T) << where << " local, head " << h;
        }
      }
    }
}

// Chunks of 384 columns take the float4 path, of 383 the scalar one.
TEST_F(Gpu, LogSumExpMatchesCpu) {
  std::mt19937 rng(test_seed() + 3);
  const int N = 6, V = 1000;
  const auto logits = randn(rng, size_t(N) * V, 4);
  std::vector<int32_t> target = {0, 999, 383, 384, -1, 500};
  for (int Vc : {384, 383}) {
    std::vector<float> m(N, -INFINITY), tgt(N, 0);
    std::vector<double> s(N, 0);
    DeviceBuffer Tg = upload(target), M = upload(m), S = upload(s), Tl = upload(tgt);
    for (int v0 = 0; v0 < V; v0 += Vc) {
      const int n = std::min(Vc, V - v0);
      std::vector<float> chunk(size_t(N) * n);
      for (int r = 0; r < N; ++r)
        std::copy_n(logits.begin() + int64_t(r) * V + v0, n, chunk.begin() + int64_t(r) * n);
      cpu::logsumexp_update(chunk.data(), N, n, m.data(), s.data());
      DeviceBuffer C = upload(chunk);
      cuda::logsumexp_update(C.as<float>(), N, n, v0, Tg.as<int32_t>(), M.as<float>(),
                             S.as<double>(), Tl.as<float>(), nullptr);
      cuda::check(cudaDeviceSynchronize(), "sync");
    }
    DeviceBuffer Lse = poisoned(size_t(N) * 4);
    cuda::logsumexp_finish(Lse.as<float>(), M.as<float>(), S.as<double>(), N, nullptr);
    const auto gm = download<float>(M, N), gt = download<float>(Tl, N),
               gl = download<float>(Lse, N);
    const auto gs = download<double>(S, N);
    for (int r = 0; r < N; ++r) {
      EXPECT_NEAR(gm[r] + std::log(gs[r]), m[r] + std::log(s[r]), 1e-5)
          << "Vc " << Vc << " row " << r;
      if (target[r] >= 0) {
        EXPECT_EQ(gt[r], logits[size_t(r) * V + target[r]]) << "Vc " << Vc << " row " << r;
      }
      // As engine/cpu/train.cpp finishes it, from the same state: the device's double log may
      // differ from the host's in the last double bit, which float rounding almost always hides.
      EXPECT_FLOAT_EQ(gl[r], float(double(gm[r]) + std::log(gs[r]))) << "Vc " << Vc << " row " << r;
    }
  }
}

// Greedy decoding's device argmax against eval/sampling.h's (std::max_element): random rows
// of a width that is no multiple of the block, a tie to the lower column, -inf and NaN entries.
// Exact: it returns an index.
TEST_F(Gpu, ArgmaxMatchesCpu) {
  std::mt19937 rng(test_seed() + 31);
  const int N = 9, C = 2500;
  auto x = randn(rng, size_t(N) * C);
  auto row = [&](int r) { return std::span<float>(x.data() + size_t(r) * C, C); };
  row(1)[1700] = row(1)[40] = 9.0f;                    // a tie: the lower column
  std::fill(row(2).begin(), row(2).end(), -INFINITY);  // all -inf: column 0
  row(3)[5] = NAN;                                     // NaN is passed over
  row(3)[2499] = 12.0f;
  row(4)[0] = NAN;  // NaN first: max_element never moves off it
  std::fill(row(5).begin(), row(5).end(), NAN);
  std::fill(row(6).begin(), row(6).end(), 1.0f);  // all equal: column 0
  row(7)[2499] = 50.0f;                           // the last column
  DeviceBuffer X = upload(x), Out = poisoned(size_t(N) * 4);
  cuda::argmax_rows(Out.as<int32_t>(), X.as<float>(), N, C, nullptr);
  const auto got = download<int32_t>(Out, N);
  for (int r = 0; r < N; ++r) EXPECT_EQ(got[r], argmax(row(r))) << "row " << r;
}

// A cuBLAS handle on the default stream for one test, destroyed with it (also when an ASSERT
// ends the test early).
struct Blas {
  cublasHandle_t h = nullptr;
  Blas() { cuda::check_blas(cublasCreate(&h), "cublasCreate"); }
  ~Blas() { cublasDestroy(h); }
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  operator cublasHandle_t() const { return h; }
};

// The products, and the output head's with MPT's logit scale applied by the GEMM (alpha).
TEST_F(Gpu, GemmMatchesCpu) {
  std::mt19937 rng(test_seed() + 4);
  const int N = 9, IC = 200, OC = 150;
  const auto x = randn(rng, size_t(N) * IC), w = randn(rng, size_t(OC) * IC, 0.1f);
  const Blas h;
  for (float alpha : {1.0f, 0.3f}) {
    std::vector<float> ref(size_t(N) * OC);
    head_logits(ref.data(), OC, x.data(), w.data(), N, IC, OC, alpha);
    DeviceBuffer X = upload(x), Wd = upload(w), O = poisoned(ref.size() * 4);
    cuda::gemm_rows<float>(h, O.as<float>(), OC, X.as<float>(), Wd.as<float>(), N, IC, OC, alpha);
    EXPECT_LE(rel_err(download<float>(O, ref.size()), ref), 1e-5) << "alpha " << alpha;
  }
}

// ---- Training kernels (surgical repair) ----

// The host's rounding of a float to W, as the kernels' from_f32 rounds it (to nearest).
template <class W>
W to_w(float x) {
  if constexpr (std::is_same_v<W, float>) return x;
  if constexpr (std::is_same_v<W, __nv_bfloat16>) return __float2bfloat16_rn(x);
  if constexpr (std::is_same_v<W, __half>) return __float2half_rn(x);
}
template <class W>
float from_w(W x) {
  if constexpr (std::is_same_v<W, float>) return x;
  if constexpr (std::is_same_v<W, __nv_bfloat16>) return __bfloat162float(x);
  if constexpr (std::is_same_v<W, __half>) return __half2float(x);
}
// n values of W from a device buffer, as floats.
template <class W>
std::vector<float> download_floats(const DeviceBuffer& d, size_t n) {
  std::vector<float> out;
  for (W v : download<W>(d, n)) out.push_back(from_w(v));
  return out;
}
template <class W>
std::vector<W> to_w(const std::vector<float>& v) {
  std::vector<W> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_w<W>(v[i]);
  return out;
}
template <class W>
bool same_bits(const std::vector<W>& a, const std::vector<W>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(W)) == 0;
}

// gemm in all four transpositions, each operand a window (column offset 2) of a wider matrix,
// with alpha and beta (beta 0: C poisoned, never read), against cpu::gemm on the same W-rounded
// inputs. Both sides accumulate in fp32 and products of bf16 or fp16 values are exact in fp32,
// so every W is held to fp32 rounding of the sums: 1e-5 of the output's scale (TF32 would cost
// 1e-3).
template <class W>
void expect_gemm_matches_cpu(cublasHandle_t h, std::mt19937& rng, const char* wname) {
  const int M = 37, N = 29, K = 53, pad = 5, off = 2;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (float beta : {0.0f, 0.5f}) {
        const int a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K,
                  b_cols = tb ? K : N;
        const int lda = a_cols + pad, ldb = b_cols + pad, ldc = N + pad;
        std::vector<float> a = randn(rng, size_t(a_rows) * lda),
                           b = randn(rng, size_t(b_rows) * ldb), c = randn(rng, size_t(M) * ldc);
        for (auto& x : a) x = from_w(to_w<W>(x));
        for (auto& x : b) x = from_w(to_w<W>(x));
        std::vector<float> ref = c;
        cpu::gemm<float>(ta, tb, M, N, K, 0.7f, a.data() + off, lda, b.data() + off, ldb, beta,
                         ref.data(), ldc);
        DeviceBuffer A = upload(to_w<W>(a)), B = upload(to_w<W>(b)),
                     C = beta == 0 ? poisoned(c.size() * 4) : upload(c);
        cuda::gemm<W>(h, ta, tb, M, N, K, 0.7f, A.as<W>() + off, lda, B.as<W>() + off, ldb, beta,
                      C.as<float>(), ldc);
        auto got = download<float>(C, c.size());
        // The padding columns of C are not part of the product: compared as they were.
        for (int i = 0; i < M; ++i)
          for (int j = N; j < ldc; ++j) got[size_t(i) * ldc + j] = ref[size_t(i) * ldc + j];
        EXPECT_LE(rel_err(got, ref), 1e-5)
            << wname << " transA=" << ta << " transB=" << tb << " beta=" << beta;
      }
}

// gemm_rows with 16-bit weights for the rows of a decoding step (1 to 8: the GEMV kernel; 9:
// cuBLAS) into a wider output (ldo > OC, the padding poisoned and left alone), against the CPU on
// the same rounded inputs: products exact in fp32, sums in another order: 1e-5 of the scale.
template <class W>
void expect_gemm_rows_16bit(cublasHandle_t h, std::mt19937& rng, const char* wname) {
  const int IC = 264, OC = 77, ldo = 80;
  for (int N : {1, 2, 3, 5, 8, 9}) {
    auto x = randn(rng, size_t(N) * IC), w = randn(rng, size_t(OC) * IC, 0.1f);
    for (auto& v : x) v = from_w(to_w<W>(v));
    for (auto& v : w) v = from_w(to_w<W>(v));
    std::vector<float> ref(size_t(N) * OC);
    head_logits(ref.data(), OC, x.data(), w.data(), N, IC, OC, 0.3f);
    DeviceBuffer X = upload(to_w<W>(x)), Wd = upload(to_w<W>(w)), O = poisoned(size_t(N) * ldo * 4);
    cuda::gemm_rows<W>(h, O.as<float>(), ldo, X.as<W>(), Wd.as<W>(), N, IC, OC, 0.3f);
    const auto got = download<float>(O, size_t(N) * ldo);
    std::vector<float> g;
    int64_t pad_touched = 0;
    for (int r = 0; r < N; ++r)
      for (int c = 0; c < ldo; ++c) {
        const float v = got[size_t(r) * ldo + c];
        if (c < OC)
          g.push_back(v);
        else
          pad_touched += !std::isnan(v);
      }
    EXPECT_LE(rel_err(g, ref), 1e-5) << wname << " N=" << N;
    EXPECT_EQ(pad_touched, 0) << wname << " N=" << N << ": written past OC";
  }
}

TEST_F(Gpu, GemmRows16BitMatchesCpu) {
  std::mt19937 rng(test_seed() + 16);
  const Blas h;
  expect_gemm_rows_16bit<__nv_bfloat16>(h, rng, "bf16");
  expect_gemm_rows_16bit<__half>(h, rng, "f16");
}

// A decoding step's attention (one new row per sequence, no statistics: the keys split over the
// block's warps, attention_decode_kernel) against the same rows through the kernel that also
// computes the statistics (attention_kernel, checked against the CPU above): four sequences, one
// not in the step, with 1 to 1,000 keys (one warp's tile to every warp with many), head
// dimensions with and without 16-byte rows and up to 8 per lane, every family's convention.
// The same scores merged in another order: 1e-5 of the scale in fp32; bf16 outputs within one
// bf16 ulp.
TEST_F(Gpu, DecodeAttentionMatchesRowKernel) {
  std::mt19937 rng(test_seed() + 47);
  const AlibiParams conventions[] = {AlibiParams{}, AlibiParams{0.3, false, false, false},
                                     AlibiParams{0, true, true, false}};
  for (const AlibiParams& alibi : conventions)
    for (auto [H, hd] : {std::pair{2, 6}, {3, 40}, {2, 64}, {1, 128}, {1, 200}}) {
      const int d = H * hd, B = 4, cap = 1001;
      const std::vector<int32_t> past = {0, 77, 0, 1000}, n_rows = {1, 1, 0, 1},
                                 q_row0 = {0, 1, 0, 2}, row_seq = {0, 1, 3};
      const int N = 3;
      const auto qkv = randn(rng, size_t(N) * 3 * d);
      const auto kc = randn(rng, size_t(B) * H * cap * hd), vc = randn(rng, kc.size());
      std::vector<float> slopes(H);
      for (int h = 0; h < H; ++h) slopes[h] = std::pow(2.0f, -8.0f * float(h + 1) / float(H + 1));
      DeviceBuffer QKV = upload(qkv), K = upload(kc), V = upload(vc), Sl = upload(slopes),
                   RS = upload(row_seq), Q0 = upload(q_row0), NR = upload(n_rows),
                   P0 = upload(past), Stats = poisoned(size_t(3) * H * N * 4);
      const cuda::RowMap m{
          RS.as<int32_t>(), Q0.as<int32_t>(), NR.as<int32_t>(), P0.as<int32_t>(), N, B};
      const std::string where = "H=" + std::to_string(H) + " hd=" + std::to_string(hd) +
                                " scale=" + std::to_string(alibi.scale);
      DeviceBuffer Want = poisoned(size_t(N) * d * 4), Got = poisoned(size_t(N) * d * 4);
      cuda::alibi_attention_forward<float>(Want.as<float>(), Stats.as<float>(), nullptr, nullptr,
                                           QKV.as<float>(), K.as<float>(), V.as<float>(),
                                           Sl.as<float>(), alibi, m, H, hd, cap, 1, nullptr);
      cuda::alibi_attention_forward<float>(Got.as<float>(), nullptr, nullptr, nullptr,
                                           QKV.as<float>(), K.as<float>(), V.as<float>(),
                                           Sl.as<float>(), alibi, m, H, hd, cap, 1, nullptr);
      EXPECT_LE(rel_err(download<float>(Got, size_t(N) * d), download<float>(Want, size_t(N) * d)),
                1e-5)
          << where;
      DeviceBuffer Want16 = poisoned(size_t(N) * d * 2), Got16 = poisoned(size_t(N) * d * 2);
      cuda::alibi_attention_forward<__nv_bfloat16>(
          Want16.as<__nv_bfloat16>(), Stats.as<float>(), nullptr, nullptr, QKV.as<float>(),
          K.as<float>(), V.as<float>(), Sl.as<float>(), alibi, m, H, hd, cap, 1, nullptr);
      cuda::alibi_attention_forward<__nv_bfloat16>(
          Got16.as<__nv_bfloat16>(), nullptr, nullptr, nullptr, QKV.as<float>(), K.as<float>(),
          V.as<float>(), Sl.as<float>(), alibi, m, H, hd, cap, 1, nullptr);
      EXPECT_LE(rel_err(download_floats<__nv_bfloat16>(Got16, size_t(N) * d),
                        download_floats<__nv_bfloat16>(Want16, size_t(N) * d)),
                1.0 / 256)
          << where << " bf16";
    }
}

// The decoding step's fused products (the GELU and the qkv split in the GEMV's epilogue, 1 to
// 8 rows) and the same ops on 9 rows (cuBLAS, then the separate kernels) against the separate
// public ops composed by hand: cuda::gemm (cuBLAS), then gelu_forward, or the copy of the raw
// product and qkv_split. Products summed in another order: 1e-5 of the scale in fp32; the GELU
// output rounded to W: one unit in its last place (2^-8 bf16, 2^-11 f16, of the scale). Cache
// slots no row owns must stay NaN.
template <class W>
void expect_fused_linear_ops(cublasHandle_t h, std::mt19937& rng, const char* wname) {
  const int IC = 136, C = 200, H = 2, hd = 12, cap = 9, Q = 3 * H * hd;
  const double w_ulp = std::is_same_v<W, __half> ? 1.0 / 2048 : 1.0 / 256;
  for (int N : {1, 3, 8, 9}) {
    const std::string where = std::string(wname) + " N=" + std::to_string(N);
    auto x = randn(rng, size_t(N) * IC), w = randn(rng, size_t(C) * IC, 0.1f),
         wq = randn(rng, size_t(Q) * IC, 0.1f), bias = randn(rng, size_t(C), 0.3f),
         bq = randn(rng, size_t(Q), 0.3f);
    DeviceBuffer X = upload(to_w<W>(x)), Wd = upload(to_w<W>(w)), Wq = upload(to_w<W>(wq)),
                 Bd = upload(bias), Bq = upload(bq);
    // GELU (BLOOM's tanh form).
    DeviceBuffer Out = poisoned(size_t(N) * C * sizeof(W)), H32 = poisoned(size_t(N) * C * 4),
                 RefOut = poisoned(size_t(N) * C * sizeof(W)), RefH = poisoned(size_t(N) * C * 4);
    cuda::linear_gelu_forward<W>(Out.as<W>(), H32.as<float>(), h, X.as<W>(), Wd.as<W>(),
                                 Bd.as<float>(), N, IC, C, Gelu::tanh, nullptr);
    cuda::gemm<W>(h, false, true, N, C, IC, 1.0f, X.as<W>(), IC, Wd.as<W>(), IC, 0.0f,
                  RefH.as<float>(), C);
    cuda::gelu_forward<W>(RefOut.as<W>(), RefH.as<float>(), Bd.as<float>(), N, C, Gelu::tanh,
                          nullptr);
    EXPECT_LE(rel_err(download<float>(H32, size_t(N) * C), download<float>(RefH, size_t(N) * C)),
              1e-5)
        << where << " pre-activation";
    EXPECT_LE(
        rel_err(download_floats<W>(Out, size_t(N) * C), download_floats<W>(RefOut, size_t(N) * C)),
        w_ulp)
        << where << " gelu";
    // qkv: rows of two sequences, the first with past 4 (its first rows), the second past 1;
    // MPT's clamp on so that it acts.
    const int n0 = (N + 1) / 2, B = 2;
    std::vector<int32_t> row_seq, q_row0 = {0, n0}, n_rows = {n0, N - n0}, past = {4, 1};
    for (int g = 0; g < N; ++g) row_seq.push_back(g < n0 ? 0 : 1);
    if (N - n0 == 0) q_row0[1] = 0;
    DeviceBuffer RS = upload(row_seq), Q0 = upload(q_row0), NR = upload(n_rows), P0 = upload(past);
    const cuda::RowMap m{
        RS.as<int32_t>(), Q0.as<int32_t>(), NR.as<int32_t>(), P0.as<int32_t>(), N, B};
    const size_t cache = size_t(B) * H * cap * hd;
    DeviceBuffer QKV = poisoned(size_t(N) * Q * 4), Raw = poisoned(size_t(N) * Q * 4),
                 K = poisoned(cache * 4), V = poisoned(cache * 4),
                 RefQKV = poisoned(size_t(N) * Q * 4), RefK = poisoned(cache * 4),
                 RefV = poisoned(cache * 4);
    cuda::linear_qkv_forward<W>(QKV.as<float>(), Raw.as<float>(), K.as<float>(), V.as<float>(), h,
                                X.as<W>(), Wq.as<W>(), Bq.as<float>(), 0.5f, m, IC, H, hd, cap,
                                nullptr);
    cuda::gemm<W>(h, false, true, N, Q, IC, 1.0f, X.as<W>(), IC, Wq.as<W>(), IC, 0.0f,
                  RefQKV.as<float>(), Q);
    const auto raw = download<float>(RefQKV, size_t(N) * Q);
    cuda::qkv_split(RefQKV.as<float>(), RefK.as<float>(), RefV.as<float>(), Bq.as<float>(), 0.5f, m,
                    H, hd, cap, nullptr);
    EXPECT_LE(rel_err(download<float>(Raw, size_t(N) * Q), raw), 1e-5) << where << " raw";
    EXPECT_LE(rel_err(download<float>(QKV, size_t(N) * Q), download<float>(RefQKV, size_t(N) * Q)),
              1e-5)
        << where << " qkv";
    for (auto [got_c, ref_c, name] : {std::tuple{&K, &RefK, "keys"}, {&V, &RefV, "values"}}) {
      const auto g = download<float>(*got_c, cache), r = download<float>(*ref_c, cache);
      std::vector<float> gs, rs;
      int64_t nan_mismatch = 0;
      for (size_t i = 0; i < cache; ++i) {
        nan_mismatch += std::isnan(g[i]) != std::isnan(r[i]);
        if (!std::isnan(r[i])) gs.push_back(g[i]), rs.push_back(r[i]);
      }
      EXPECT_EQ(nan_mismatch, 0) << where << " " << name << ": slots written differ";
      EXPECT_LE(rel_err(gs, rs), 1e-5) << where << " " << name;
    }
  }
}

TEST_F(Gpu, FusedLinearOpsMatchSeparateOps) {
  std::mt19937 rng(test_seed() + 41);
  const Blas h;
  expect_fused_linear_ops<__nv_bfloat16>(h, rng, "bf16");
  expect_fused_linear_ops<__half>(h, rng, "f16");
}

TEST_F(Gpu, GemmTransposedMatchesCpu) {
  std::mt19937 rng(test_seed() + 10);
  const Blas h;
  expect_gemm_matches_cpu<float>(h, rng, "f32");
  expect_gemm_matches_cpu<__nv_bfloat16>(h, rng, "bf16");
  expect_gemm_matches_cpu<__half>(h, rng, "f16");
}

// LayerNorm's input gradient, added to what dinp holds, against the CPU twin with the CPU
// forward's mean and rstd. Both sum in double; the float mean and rstd may differ in the last
// bit (another summation order), so 1e-5 of the gradient's scale.
TEST_F(Gpu, LayerNormBackwardMatchesCpu) {
  std::mt19937 rng(test_seed() + 11);
  for (int d : {64, 300, 2048}) {
    const int N = 7;
    const auto x = randn(rng, size_t(N) * d, 2, 1), w = randn(rng, d, 0.2f, 1),
               dout = randn(rng, size_t(N) * d), dinp = randn(rng, size_t(N) * d);
    std::vector<float> out(x.size()), mean(N), rstd(N), ref = dinp;
    cpu::layernorm_forward<float>(out.data(), mean.data(), rstd.data(), x.data(), w.data(), nullptr,
                                  N, d, 1e-5f);
    cpu::layernorm_backward<float>(ref.data(), nullptr, nullptr, dout.data(), x.data(), w.data(),
                                   mean.data(), rstd.data(), N, d);
    DeviceBuffer X = upload(x), Wd = upload(w), G = upload(dout), DI = upload(dinp);
    cuda::layernorm_backward(DI.as<float>(), G.as<float>(), X.as<float>(), Wd.as<float>(), N, d,
                             1e-5f, nullptr);
    EXPECT_LE(rel_err(download<float>(DI, ref.size()), ref), 1e-5) << "d=" << d;
  }
}

// GELU's gradient in both forms, with the bias fused and without, into a fresh buffer and in
// place. The device's tanhf/erff/expf differ from the host's by an ulp or two, which the
// derivative's x * (1 - tanh^2) can amplify a few times: 1e-5 of the gradient's scale.
TEST_F(Gpu, GeluBackwardMatchesCpu) {
  std::mt19937 rng(test_seed() + 12);
  const int N = 5, C = 1000;
  const auto h = randn(rng, size_t(N) * C, 2), bias = randn(rng, C), dout = randn(rng, h.size());
  for (Gelu kind : {Gelu::tanh, Gelu::erf})
    for (bool with_bias : {true, false}) {
      std::vector<float> pre(h.size()), ref(h.size());
      for (size_t i = 0; i < h.size(); ++i) pre[i] = with_bias ? h[i] + bias[i % C] : h[i];
      cpu::gelu_backward<float>(ref.data(), dout.data(), pre.data(), int64_t(ref.size()), kind);
      DeviceBuffer H = upload(h), B = upload(bias), G = upload(dout), O = poisoned(h.size() * 4);
      const float* b = with_bias ? B.as<float>() : nullptr;
      cuda::gelu_backward(O.as<float>(), G.as<float>(), H.as<float>(), b, N, C, kind, nullptr);
      cuda::gelu_backward(G.as<float>(), G.as<float>(), H.as<float>(), b, N, C, kind, nullptr);
      const std::string where =
          std::string(kind == Gelu::erf ? "erf" : "tanh") + " bias=" + std::to_string(with_bias);
      EXPECT_LE(rel_err(download<float>(O, ref.size()), ref), 1e-5) << where;
      EXPECT_EQ(download<float>(G, ref.size()), download<float>(O, ref.size()))
          << where << ": in place";
    }
}

// MPT's clamp gradient from the raw GEMM output (+ bias): exactly the CPU mask's zeros, values
// at the bounds passing (torch.clamp's gradient).
TEST_F(Gpu, ClampBackwardMatchesCpu) {
  std::mt19937 rng(test_seed() + 13);
  const int N = 6, C = 96;
  const float c = 1.0f;
  auto raw = randn(rng, size_t(N) * C, 1.2f);
  const auto bias = randn(rng, C, 0.3f), dq = randn(rng, raw.size());
  for (bool with_bias : {true, false}) {
    if (!with_bias) raw[3] = c, raw[7] = -c, raw[11] = std::nextafter(c, 2.0f);
    std::vector<float> pre(raw.size()), ref = dq;
    for (size_t i = 0; i < raw.size(); ++i) pre[i] = with_bias ? raw[i] + bias[i % C] : raw[i];
    std::vector<uint8_t> mask(raw.size());
    cpu::clamp_forward<float>(pre.data(), mask.data(), int64_t(pre.size()), c);
    cpu::clamp_backward<float>(ref.data(), mask.data(), int64_t(ref.size()));
    DeviceBuffer R = upload(raw), B = upload(bias), D = upload(dq);
    cuda::clamp_backward(D.as<float>(), R.as<float>(), with_bias ? B.as<float>() : nullptr, N, C, c,
                         nullptr);
    EXPECT_EQ(download<float>(D, ref.size()), ref) << "bias=" << with_bias;
  }
}

// One run of alibi_attention_backward after the forward (with its log-sum-exp) over packed
// sequences, against the CPU twin per sequence and part (q, k, v) at `tol` of the part's scale;
// the masked heads' columns stay exactly 0, and a second call adds exactly as much again
// (accumulation into dqkv, determinism).
template <class W>
void expect_attention_backward(std::mt19937& rng, const std::string& where, const AlibiParams& al,
                               int H, int hd, const std::vector<int>& T,
                               const std::vector<uint8_t>& mask, double tol) {
  const int d = H * hd, B = int(T.size()), max_rows = *std::max_element(T.begin(), T.end());
  int N = 0;
  for (int t : T) N += t;
  const int cap = max_rows;
  const auto qkv = randn(rng, size_t(N) * 3 * d), dctx = randn(rng, size_t(N) * d);
  std::vector<float> slopes(H);
  for (int h = 0; h < H; ++h) slopes[h] = std::pow(2.0f, -8.0f * float(h + 1) / float(H + 1));
  std::vector<int32_t> row_seq, q_row0, n_rows(T.begin(), T.end()), past(B, 0);
  for (int b = 0; b < B; ++b) {
    q_row0.push_back(int32_t(row_seq.size()));
    row_seq.insert(row_seq.end(), T[b], b);
  }
  // The caches hold each sequence's keys and values; positions past its length stay NaN.
  std::vector<float> kc(size_t(B) * H * cap * hd, NAN), vc = kc;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T[b]; ++t)
      for (int h = 0; h < H; ++h)
        for (int e = 0; e < hd; ++e) {
          const size_t at = ((size_t(b) * H + h) * cap + t) * hd + e;
          const size_t row = size_t(q_row0[b] + t) * 3 * d;
          kc[at] = qkv[row + qkv_row(h, 1, hd) + e];
          vc[at] = qkv[row + qkv_row(h, 2, hd) + e];
        }
  DeviceBuffer QKV = upload(qkv), G = upload(dctx), K = upload(kc), V = upload(vc),
               Sl = upload(slopes), RS = upload(row_seq), Q0 = upload(q_row0), NR = upload(n_rows),
               P0 = upload(past), Mk = upload(mask), Ctx = poisoned(size_t(N) * d * sizeof(W)),
               Lse = poisoned(size_t(H) * N * 4), Dsc = poisoned(size_t(H) * N * 4),
               DQ(size_t(N) * 3 * d * 4);
  cuda::check(cudaMemset(DQ.as<void>(), 0, DQ.bytes()), "memset");
  const cuda::RowMap m{
      RS.as<int32_t>(), Q0.as<int32_t>(), NR.as<int32_t>(), P0.as<int32_t>(), N, B};
  const uint8_t* mk = mask.empty() ? nullptr : Mk.as<uint8_t>();
  cuda::alibi_attention_forward<W>(Ctx.as<W>(), nullptr, nullptr, nullptr, QKV.as<float>(),
                                   K.as<float>(), V.as<float>(), Sl.as<float>(), al, m, H, hd, cap,
                                   max_rows, nullptr, Lse.as<float>());
  auto backward = [&] {
    cuda::alibi_attention_backward<W>(DQ.as<float>(), G.as<float>(), QKV.as<float>(), K.as<float>(),
                                      V.as<float>(), Ctx.as<W>(), Lse.as<float>(), Dsc.as<float>(),
                                      Sl.as<float>(), al, m, H, hd, cap, max_rows, mk, nullptr);
  };
  backward();
  const auto got = download<float>(DQ, size_t(N) * 3 * d);
  // The reference of the whole pass, then each sequence's error against the part's scale over
  // the pass: in dS = p (dp - D) a short sequence with a peaked softmax cancels most of its
  // terms, so its own gradient can be far smaller than the fp32 rounding of those terms (T = 3
  // with MPT's softmax_scale: 7e-5 of its own scale, both sides correct to fp32).
  std::vector<float> ref(size_t(N) * 3 * d, 0.0f);
  for (int b = 0; b < B; ++b)
    cpu::alibi_attention_backward<float>(ref.data() + size_t(q_row0[b]) * 3 * d,
                                         dctx.data() + size_t(q_row0[b]) * d,
                                         qkv.data() + size_t(q_row0[b]) * 3 * d, slopes.data(), al,
                                         mask.empty() ? nullptr : mask.data(), T[b], H, hd);
  auto err = [&](int b, int p) {
    const auto g = qkv_part(got.data(), q_row0[b], T[b], p, H, hd),
               r = qkv_part(ref.data(), q_row0[b], T[b], p, H, hd);
    const auto all = qkv_part(ref.data(), 0, N, p, H, hd);
    double num = 0, den = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      const double diff = std::abs(double(g[i]) - r[i]);
      if (std::isnan(diff)) return double(NAN);  // a poisoned element left: fails EXPECT_LE
      num = std::max(num, diff);
    }
    for (float x : all) den = std::max(den, std::abs(double(x)));
    return num / std::max(den, 1e-30);
  };
  for (int b = 0; b < B; ++b) {
    for (int p = 0; p < 3; ++p)
      EXPECT_LE(err(b, p), tol) << where << " H=" << H << " hd=" << hd << " sequence " << b
                                << " (T=" << T[b] << ") part "
                                << "qkv"[p];
  }
  backward();
  expect_masked_and_doubled(got, download<float>(DQ, got.size()), mask, N, H, hd, where);
}

// Every family's convention; head dims 8, 64, 128 (and 200, the widest tiles) with sequence
// lengths that are not multiples of the tiles (1, 33, 65, 70, 97, 100, 130) packed together; a
// head mask. fp32 on both sides: the GPU's D = dctx · ctx and its summation orders against the
// CPU's, over up to 130 terms: 2e-5 of the part's scale. bf16 and fp16 ctx round D's inputs to 8
// and 11 bits, which moves dq and dk by up to 5e-3 and 5e-4 of their scale: 1.5e-2 and 2e-3
// (sequences under 64 rows: from there 16-bit types go to the tensor-core kernels, tested in
// test_cuda_attention.cpp).
TEST_F(Gpu, AttentionBackwardMatchesCpu) {
  std::mt19937 rng(test_seed() + 14);
  struct Case {
    int H, hd;
    std::vector<int> T;
    std::vector<uint8_t> mask;
  };
  const std::pair<const char*, AlibiParams> conventions[] = {
      {"bloom", AlibiParams{}},
      {"mpt softmax_scale", AlibiParams{0.3, false, false, false}},
      {"falcon", AlibiParams{0, true, true, false}},
      {"falcon as HF eager", AlibiParams{0, true, true, true}}};
  for (const auto& [name, al] : conventions)
    for (const Case& cs : std::vector<Case>{{2, 8, {1, 5, 70}, {}},
                                            {3, 64, {100, 33, 130}, {1, 0, 1}},
                                            {2, 128, {65, 3, 97}, {}},
                                            {1, 200, {70}, {}}})
      expect_attention_backward<float>(rng, name, al, cs.H, cs.hd, cs.T, cs.mask, 2e-5);
  expect_attention_backward<__nv_bfloat16>(rng, "bloom, bf16 ctx", AlibiParams{}, 3, 64, {60, 33},
                                           {}, 1.5e-2);
  expect_attention_backward<__half>(rng, "bloom, f16 ctx", AlibiParams{}, 2, 128, {50}, {}, 2e-3);
}

// The cross-entropy gradient of one vocabulary chunk, in place: targets inside and outside the
// chunk and ignored rows (-1), against the CPU twin. One expf per element each side: 2e-6.
TEST_F(Gpu, CrossEntropyBackwardMatchesCpu) {
  std::mt19937 rng(test_seed() + 15);
  const int N = 6, Vc = 384, v0 = 384;
  const auto logits = randn(rng, size_t(N) * Vc, 4);
  const std::vector<int32_t> target = {384, 500, 767, 0, -1, 768};
  std::vector<float> lse(N), scale(N);
  for (int r = 0; r < N; ++r) {
    double s = 0;
    for (int v = 0; v < Vc; ++v) s += std::exp(double(logits[size_t(r) * Vc + v]));
    lse[r] = float(std::log(s) + 0.5 * r);  // as if the rest of the vocabulary added mass
    scale[r] = 0.25f + 0.1f * float(r);
  }
  std::vector<float> ref(logits.size());
  cpu::cross_entropy_backward<float>(ref.data(), logits.data(), lse.data(), target.data(),
                                     scale.data(), N, Vc, v0);
  DeviceBuffer L = upload(logits), Ls = upload(lse), Tg = upload(target), Sc = upload(scale);
  cuda::cross_entropy_backward(L.as<float>(), Ls.as<float>(), Tg.as<int32_t>(), Sc.as<float>(), N,
                               Vc, v0, nullptr);
  EXPECT_LE(rel_err(download<float>(L, ref.size()), ref), 2e-6);
}

// AdamW over three steps with weight decay, bit for bit: the same fp32 operations on both
// devices (no FMA contraction either side).
TEST_F(Gpu, AdamWMatchesCpu) {
  std::mt19937 rng(test_seed() + 16);
  const int n = 1000;
  auto p = randn(rng, n, 0.1f), m = randn(rng, n, 0.01f), v = randn(rng, n, 0.01f);
  for (auto& x : v) x = x * x;
  DeviceBuffer P = upload(p), M = upload(m), V = upload(v);
  const AdamWConfig cfg{1e-3, 0.9, 0.999, 1e-8, 0.01};
  for (int t = 1; t <= 3; ++t) {
    const auto g = randn(rng, n, 0.05f);
    const AdamWStep s = adamw_step_for(cfg, t, cfg.lr * (1.0 - 0.1 * t));
    cpu::adamw_step(p.data(), g.data(), m.data(), v.data(), n, s);
    DeviceBuffer Gd = upload(g);
    cuda::adamw_step(P.as<float>(), Gd.as<float>(), M.as<float>(), V.as<float>(), n, s, nullptr);
    EXPECT_TRUE(same_bits(download<float>(P, n), p)) << "parameters after step " << t;
    EXPECT_TRUE(same_bits(download<float>(M, n), m)) << "first moments after step " << t;
    EXPECT_TRUE(same_bits(download<float>(V, n), v)) << "second moments after step " << t;
  }
}

// The sum of squares in double against the host's (another order: 1e-12 relative), the same
// bits on a second run, and the clipping scale (one rounded product: exact).
TEST_F(Gpu, SumSquaresMatchesCpu) {
  std::mt19937 rng(test_seed() + 17);
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(1000), int64_t(3 << 20) + 7}) {
    const auto x = randn(rng, size_t(n));
    double want = 0;
    for (float a : x) want += double(a) * a;
    DeviceBuffer X = upload(x), S = poisoned(8);
    cuda::sum_squares(S.as<double>(), X.as<float>(), n, nullptr);
    const double got = download<double>(S, 1)[0];
    EXPECT_NEAR(got, want, 1e-12 * want) << "n=" << n;
    cuda::sum_squares(S.as<double>(), X.as<float>(), n, nullptr);
    EXPECT_TRUE(same_bits(download<double>(S, 1), std::vector<double>{got})) << "n=" << n;
    const float s = 0.37f;
    std::vector<float> scaled = x;
    for (auto& a : scaled) a *= s;
    cuda::scale_inplace(X.as<float>(), n, s, nullptr);
    EXPECT_EQ(download<float>(X, x.size()), scaled) << "n=" << n;
  }
}

// Column sums of a window of a wider matrix, added to what out holds: against the host's double
// sums (1e-6 of the sum of magnitudes), and the same bits on a second run.
TEST_F(Gpu, ColumnSumsMatchesCpu) {
  std::mt19937 rng(test_seed() + 18);
  const int N = 1000, ld = 100, C = 70, off = 5;
  const auto in = randn(rng, size_t(N) * ld), out0 = randn(rng, C);
  DeviceBuffer I = upload(in), O = upload(out0), O2 = upload(out0);
  cuda::column_sums(O.as<float>(), I.as<float>() + off, ld, N, C, nullptr);
  cuda::column_sums(O2.as<float>(), I.as<float>() + off, ld, N, C, nullptr);
  const auto got = download<float>(O, C);
  for (int c = 0; c < C; ++c) {
    double s = out0[c], mag = std::abs(out0[c]);
    for (int r = 0; r < N; ++r) {
      s += in[size_t(r) * ld + off + c];
      mag += std::abs(in[size_t(r) * ld + off + c]);
    }
    EXPECT_NEAR(got[c], s, 1e-6 * mag) << "column " << c;
  }
  EXPECT_TRUE(same_bits(download<float>(O2, C), got));
}

// fp32 into W: the whole conversion, a block of rows inside a larger buffer, and a window of
// columns, each the host's round-to-nearest bit for bit, nothing outside the window touched.
template <class W>
void expect_convert_matches_cpu(std::mt19937& rng, const char* wname) {
  auto x = randn(rng, 1000, 3);
  x[0] = 1e-30f, x[1] = -7e4f, x[2] = 0.0f;
  const auto xw = to_w<W>(x);
  DeviceBuffer X = upload(x), O = poisoned(x.size() * sizeof(W));
  cuda::to_weight_type<W>(O.as<W>(), X.as<float>(), int64_t(x.size()), nullptr);
  EXPECT_TRUE(same_bits(download<W>(O, x.size()), xw)) << wname << " to_weight_type";

  const auto before = to_w<W>(randn(rng, 1040));
  std::vector<W> want = before;
  std::copy(xw.begin(), xw.end(), want.begin() + 17);
  DeviceBuffer Rw = upload(before);
  cuda::copy_rows<W>(Rw.as<W>() + 17, X.as<float>(), int64_t(x.size()), nullptr);
  EXPECT_TRUE(same_bits(download<W>(Rw, want.size()), want)) << wname << " copy_rows";

  const int R = 20, C = 9, ld = 40, c0 = 6;
  want = before;
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) want[size_t(r) * ld + c0 + c] = to_w<W>(x[size_t(r) * C + c]);
  DeviceBuffer Cw = upload(before);
  cuda::copy_cols<W>(Cw.as<W>() + c0, ld, X.as<float>(), R, C, nullptr);
  EXPECT_TRUE(same_bits(download<W>(Cw, want.size()), want)) << wname << " copy_cols";
}

TEST_F(Gpu, ConvertMatchesCpu) {
  std::mt19937 rng(test_seed() + 19);
  expect_convert_matches_cpu<float>(rng, "f32");
  expect_convert_matches_cpu<__nv_bfloat16>(rng, "bf16");
  expect_convert_matches_cpu<__half>(rng, "f16");
}

// ---- The engine, end to end ----

std::unique_ptr<Engine> gpu_engine(Model& m, const std::string& dtype) {
  return make_engine(m, DeviceKind::cuda, dtype);
}

class GpuGolden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string why = cuda::unusable_reason();
    if (!why.empty()) GTEST_SKIP() << why;
    test::use_golden_conventions(GetParam());
  }
};

// Golden logits, loss and head statistics: within 1e-4 with fp32 weights (the CPU path's own
// tolerance), and within what bf16 weights and GEMM inputs cost (test::bf16_tolerance: for the
// BLOOM-initialised models 1e-2 of the logits' scale and 1e-3 absolute on the head statistics;
// bf16 matrices alone cost 1e-3 and 2e-5 on those, GoldenModel.Bf16WeightsWithinGpuTolerance,
// and rounding the GEMM inputs adds about as much).
TEST_P(GpuGolden, ForwardMatchesGolden) {
  const std::string dir = GetParam();
  SafetensorsFile g(dir + "/golden.safetensors");
  SafetensorsFile gx(dir + "/golden_extra.safetensors");
  Model model(dir, ModelOptions{0});
  const auto ids = id_rows(g, "input_ids");
  const auto ref_logits = floats(g, "logits");
  const double ref_loss = floats(g, "loss")[0];
  const test::Bf16Tolerance bf16 = test::bf16_tolerance(dir);
  for (const auto& [dtype, tol_logits, tol_loss] :
       std::vector<std::tuple<std::string, double, double>>{{"f32", 1e-4, 1e-5},
                                                            {"bf16", bf16.logits, bf16.loss}}) {
    auto e = gpu_engine(model, dtype);
    ForwardOptions o;
    o.logits = o.nll = o.probs = true;
    const auto out = e->forward(ids, o);
    std::vector<float> ours;
    double nll = 0;
    int64_t n = 0;
    for (const auto& s : out) {
      ours.insert(ours.end(), s.logits.begin(), s.logits.end());
      nll += s.nll_sum, n += s.predicted;
    }
    const double err = rel_err(ours, ref_logits);
    EXPECT_LE(err, tol_logits) << dir << " " << dtype;
    const double loss_err = std::abs(nll / double(n) - ref_loss) / std::abs(ref_loss);
    EXPECT_LE(loss_err, tol_loss) << dir << " " << dtype;
    std::printf("measured %s %s: logits %.2e, loss %.2e\n", dir.c_str(), dtype.c_str(), err,
                loss_err);
    if (dtype == "f32")
      for (int64_t l = 0; l < model.config().n_layer; ++l) {
        const auto ref = floats(g, "attn." + std::to_string(l));
        std::vector<float> got;
        for (const auto& s : out) got.insert(got.end(), s.probs[l].begin(), s.probs[l].end());
        EXPECT_LE(rel_err(got, ref), 1e-5) << dir << " layer " << l;
      }
  }

  nlohmann::json info = nlohmann::json::parse(std::ifstream(dir + "/golden.json"));
  Tokenizer tok = Tokenizer::from_file(dir + "/tokenizer.json");
  DiagnoseOptions opts;
  opts.prompts = {info["diag_prompt"].get<std::string>()};
  const auto bos = floats(g, "diag.bos_mass"), ent = floats(g, "diag.entropy");
  const auto loc = floats(gx, "diag.local_mass");
  for (const auto& [dtype, tol] :
       std::vector<std::pair<std::string, double>>{{"f32", 1e-4}, {"bf16", bf16.metrics}}) {
    auto e = gpu_engine(model, dtype);
    const Diagnosis d = diagnose(*e, tok, opts, dir);
    double worst = 0;
    for (size_t k = 0; k < d.metrics.size(); ++k)
      worst = std::max({worst, std::abs(d.metrics[k].bos_mass - bos[k]),
                        std::abs(d.metrics[k].entropy - ent[k]),
                        std::abs(d.metrics[k].local_mass - loc[k])});
    EXPECT_LE(worst, tol) << dir << " " << dtype;
    std::printf("measured %s %s: head metrics max abs err %.2e\n", dir.c_str(), dtype.c_str(),
                worst);
  }
}

// KV-cache decoding: the logits after every token equal the full forward pass's row (fp32
// weights), and a captured CUDA graph replays exactly what eager launches compute.
TEST_P(GpuGolden, DecoderMatchesFullForward) {
  const std::string dir = GetParam();
  Model model(dir, ModelOptions{0});
  auto e = gpu_engine(model, "f32");
  const int64_t V = model.config().vocab;
  std::mt19937 rng(test_seed() + 5);
  std::vector<int32_t> ids(40);
  for (auto& x : ids) x = int32_t(rng() % uint32_t(V));
  ForwardOptions o;
  o.logits = true;
  const auto full = e->forward({ids}, o)[0].logits;
  std::vector<std::vector<float>> runs[2];
  for (const char* graphs : {"1", "0"}) {
    setenv("HEADSURGEON_CUDA_GRAPHS", graphs, 1);
    auto dec = e->decoder(1, int64_t(ids.size()));
    auto& steps = runs[graphs[0] - '0'];
    const IncrementalDecoder::Feed prefill{0, std::span(ids).subspan(0, 8)};
    steps.push_back(dec->extend({&prefill, 1}));
    for (size_t t = 8; t < ids.size(); ++t) {
      const IncrementalDecoder::Feed f{0, std::span(ids).subspan(t, 1)};
      steps.push_back(dec->extend({&f, 1}));
    }
    for (size_t k = 0; k < steps.size(); ++k) {
      const int64_t pos = 7 + int64_t(k);
      const std::vector<float> ref(full.begin() + pos * V, full.begin() + (pos + 1) * V);
      EXPECT_LE(rel_err(steps[k], ref), 1e-5) << dir << " position " << pos;
    }
  }
  unsetenv("HEADSURGEON_CUDA_GRAPHS");
  // The same kernels on the same inputs; only a cuBLAS algorithm chosen differently under
  // capture could move the last bits.
  ASSERT_EQ(runs[0].size(), runs[1].size());
  for (size_t k = 0; k < runs[0].size(); ++k)
    EXPECT_LE(rel_err(runs[1][k], runs[0][k]), 1e-6) << "graph replay vs eager, step " << k;
}

// Greedy generation on the GPU reproduces HF's 24 golden tokens (fp32 weights).
TEST_P(GpuGolden, GreedyMatchesGolden) {
  const std::string dir = GetParam();
  SafetensorsFile gx(dir + "/golden_extra.safetensors");
  Model model(dir, ModelOptions{0});
  auto e = gpu_engine(model, "f32");
  const auto prompt = id_rows(gx, "generate.prompt_ids")[0];
  const auto want = id_rows(gx, "generate.greedy_ids")[0];
  // The golden holds the new tokens only; greedy_generate returns the prompt too.
  const auto got = greedy_generate(*e, prompt, int(want.size()));
  ASSERT_EQ(got.size(), prompt.size() + want.size()) << dir;
  EXPECT_EQ(std::vector<int32_t>(got.begin() + int64_t(prompt.size()), got.end()), want) << dir;
}

INSTANTIATE_TEST_SUITE_P(Dirs, GpuGolden, ::testing::ValuesIn(test::golden_model_dirs()),
                         test::DirName());

// The GPU engine (fp32 weights) against the CPU engine on a model of a shape or convention the
// golden data lack: logits, NLL and head statistics of two sequences with layer 1's MLP ablated,
// and sampled completions (the same host sampler: same seed, same tokens).
void expect_gpu_matches_cpu(Model& model, uint32_t seed) {
  CpuEngine cpu(model);
  auto gpu = gpu_engine(model, "f32");
  const uint32_t V = uint32_t(model.config().vocab);
  std::mt19937 rng(seed);
  std::vector<std::vector<int32_t>> seqs = {std::vector<int32_t>(37), std::vector<int32_t>(5)};
  for (auto& s : seqs)
    for (auto& x : s) x = int32_t(rng() % V);
  ForwardOptions o;
  o.logits = o.nll = o.head_stats = true;
  o.ablate_mlp.assign(size_t(model.config().n_layer), 0);
  o.ablate_mlp[1] = 1;
  const auto a = cpu.forward(seqs, o), b = gpu->forward(seqs, o);
  for (size_t i = 0; i < seqs.size(); ++i) {
    EXPECT_LE(rel_err(b[i].logits, a[i].logits), 1e-4) << "sequence " << i;
    EXPECT_NEAR(b[i].nll_sum, a[i].nll_sum, 1e-4 * std::abs(a[i].nll_sum));
    for (size_t k = 0; k < a[i].bos_mass.size(); ++k) {
      EXPECT_NEAR(b[i].bos_mass[k], a[i].bos_mass[k], 1e-4);
      EXPECT_NEAR(b[i].entropy[k], a[i].entropy[k], 1e-4);
      EXPECT_NEAR(b[i].local_mass[k], a[i].local_mass[k], 1e-4);
    }
  }
  GenerateOptions g;
  g.max_new_tokens = 10;
  g.sampling.temperature = 0.8;
  g.n = 3;
  g.seed = 11;
  const auto ca = generate(cpu, seqs[1], g), cb = generate(*gpu, seqs[1], g);
  for (int s = 0; s < 3; ++s) EXPECT_EQ(ca[s].ids, cb[s].ids) << "sample " << s;
}

// 6 heads of dimension 8, post-LN.
TEST_F(Gpu, RandomPostLnModelMatchesCpu) {
  const std::string dir = test::write_random_bloom("hs_cuda", 48, 6, 3, 300, true);
  Model model(dir, ModelOptions{int64_t(1) << 40});
  std::filesystem::remove_all(dir);
  expect_gpu_matches_cpu(model, test_seed() + 6);
}

// A random family checkpoint in a fresh temporary directory.
std::string write_family(const std::string& name, const test::FamilySpec& spec) {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("hs_cuda_" + name + "_" + std::to_string(::getpid())))
                              .string();
  return test::write_random_family_model(dir, spec, 4321);
}

// A small random BLOOM (d = 128, 2 heads, 2 layers, a vocabulary of 300) read into memory, its
// directory removed, and n random ids of its vocabulary.
constexpr int kSmallVocab = 300;
std::unique_ptr<Model> small_bloom(const std::string& name) {
  const std::string dir =
      write_family(name, {.family = "bloom", .d = 128, .H = 2, .L = 2, .V = kSmallVocab});
  auto model = std::make_unique<Model>(dir, ModelOptions{int64_t(1) << 40});
  std::filesystem::remove_all(dir);
  return model;
}
std::vector<int32_t> small_ids(std::mt19937& rng, int n) {
  std::vector<int32_t> ids(n);
  for (auto& x : ids) x = int32_t(rng() % kSmallVocab);
  return ids;
}

// MPT with every option the golden mpt8 lacks: biases, clip_qkv, softmax_scale, logit_scale,
// an MLP of 3d, 12 heads (the slopes of a non-power-of-two count).
TEST_F(Gpu, RandomMptModelMatchesCpu) {
  const std::string dir = write_family("mpt", {.family = "mpt",
                                               .d = 96,
                                               .H = 12,
                                               .L = 3,
                                               .V = 300,
                                               .biases = true,
                                               .expansion_ratio = 3,
                                               .clip_qkv = 1.0,
                                               .softmax_scale = 0.3,
                                               .logit_scale = "inv_sqrt_d_model"});
  Model model(dir, ModelOptions{int64_t(1) << 40});
  std::filesystem::remove_all(dir);
  ASSERT_GT(model.config().clip_qkv, 0);
  ASSERT_NE(model.config().logit_scale, 1);
  expect_gpu_matches_cpu(model, test_seed() + 7);
}

// Falcon-RW with 12 heads (bf16 slopes that round visibly), an untied head and an MLP of 200.
TEST_F(Gpu, RandomFalconModelMatchesCpu) {
  ::setenv("HEADSURGEON_FALCON_ALIBI", "once", 1);  // as trained (a golden test may have set it)
  const std::string dir = write_family(
      "falcon",
      {.family = "falcon", .d = 96, .H = 12, .L = 3, .V = 300, .tied = false, .ffn = 200});
  Model model(dir, ModelOptions{int64_t(1) << 40});
  std::filesystem::remove_all(dir);
  ASSERT_FALSE(model.config().tied_head);
  expect_gpu_matches_cpu(model, test_seed() + 8);
}

// Decoding with bf16 weights, where the products of a step (1 to 8 rows) run on the GEMV kernel,
// inside captured graphs and eagerly, against the full forward pass (cuBLAS): the same bf16
// operands summed in another order, then rounded to bf16 again downstream: 1e-2 of the logits'
// scale (the golden bf16 tolerance; 1.0e-3 on the CPU emulation of the runtime).
TEST_F(Gpu, Bf16DecoderOnGemvMatchesFullForward) {
  const auto model = small_bloom("gemv");
  auto e = gpu_engine(*model, "bf16");
  std::mt19937 rng(test_seed() + 17);
  const auto ids = small_ids(rng, 30);
  ForwardOptions o;
  o.logits = true;
  const auto full = e->forward({ids}, o)[0].logits;
  for (const char* graphs : {"1", "0"}) {
    setenv("HEADSURGEON_CUDA_GRAPHS", graphs, 1);
    auto dec = e->decoder(1, int64_t(ids.size()));
    const IncrementalDecoder::Feed prefill{0, std::span(ids).subspan(0, 8)};
    std::vector<std::vector<float>> steps = {dec->extend({&prefill, 1})};
    for (size_t t = 8; t < ids.size(); ++t) {
      const IncrementalDecoder::Feed f{0, std::span(ids).subspan(t, 1)};
      steps.push_back(dec->extend({&f, 1}));
    }
    for (size_t k = 0; k < steps.size(); ++k) {
      const int64_t pos = 7 + int64_t(k);
      const std::vector<float> ref(full.begin() + pos * kSmallVocab,
                                   full.begin() + (pos + 1) * kSmallVocab);
      EXPECT_LE(rel_err(steps[k], ref), 1e-2) << "graphs " << graphs << " position " << pos;
    }
  }
  unsetenv("HEADSURGEON_CUDA_GRAPHS");
}

// Small passes with head statistics only are replayed from a graph from their shape's second
// pass on: each pass of new prompts of one shape (eager, captured, replayed, replayed again with
// another shape between) equals the same prompts run with HEADSURGEON_CUDA_GRAPHS=0, exactly
// (the same kernels on the same inputs), in fp32 and bf16, below and above the tensor cores'
// 64 rows.
TEST_F(Gpu, ForwardGraphReplayEqualsEager) {
  const auto model = small_bloom("graph");
  std::mt19937 rng(test_seed() + 43);
  auto prompts = [&](std::vector<int> lengths) {
    std::vector<std::vector<int32_t>> seqs;
    for (int T : lengths) seqs.push_back(small_ids(rng, T));
    return seqs;
  };
  ForwardOptions o;
  o.head_stats = true;
  for (const char* dtype : {"f32", "bf16"}) {
    auto e = gpu_engine(*model, dtype);
    for (int pass = 0; pass < 5; ++pass) {
      const auto seqs = pass == 3 ? prompts({20}) : prompts({60, 70});
      const auto got = e->forward(seqs, o);
      setenv("HEADSURGEON_CUDA_GRAPHS", "0", 1);
      const auto want = e->forward(seqs, o);
      unsetenv("HEADSURGEON_CUDA_GRAPHS");
      for (size_t i = 0; i < seqs.size(); ++i) {
        EXPECT_EQ(got[i].bos_mass, want[i].bos_mass) << dtype << " pass " << pass << " seq " << i;
        EXPECT_EQ(got[i].entropy, want[i].entropy) << dtype << " pass " << pass << " seq " << i;
        EXPECT_EQ(got[i].local_mass, want[i].local_mass)
            << dtype << " pass " << pass << " seq " << i;
      }
    }
  }
}

// Greedy decoding's ids chosen on the device (extend_argmax) against the argmax of the logits
// extend() returns, step by step for three samples of one prompt decoded together, eager and
// replayed from graphs, one sample leaving after a few steps (a smaller graph). Exact: both
// decoders run the same kernels on the same inputs.
TEST_F(Gpu, DecoderArgmaxMatchesArgmaxOfLogits) {
  const auto model = small_bloom("argmax");
  auto e = gpu_engine(*model, "bf16");
  std::mt19937 rng(test_seed() + 37);
  const auto prompt = small_ids(rng, 9);
  for (const char* graphs : {"1", "0"}) {
    setenv("HEADSURGEON_CUDA_GRAPHS", graphs, 1);
    auto a = e->decoder(3, 40), b = e->decoder(3, 40);
    const IncrementalDecoder::Feed prefill{0, prompt};
    const std::vector<int32_t>* ids = a->extend_argmax({&prefill, 1});
    ASSERT_NE(ids, nullptr);
    std::vector<float> logits = b->extend({&prefill, 1});
    std::vector<int32_t> next = {(*ids)[0], (*ids)[0], (*ids)[0]};
    EXPECT_EQ(next[0], argmax(logits)) << "graphs " << graphs << " prefill";
    for (int s = 1; s < 3; ++s) a->fork(0, s), b->fork(0, s);
    for (int k = 0; k < 12; ++k) {
      const int n = k < 5 ? 3 : 2;
      std::vector<IncrementalDecoder::Feed> feeds;
      // Sample s feeds a token of its own, so the three rows differ.
      for (int s = 0; s < n; ++s) {
        next[s] = (next[s] + 7 * s) % kSmallVocab;
        feeds.push_back({s, {&next[s], 1}});
      }
      ids = a->extend_argmax(feeds);
      logits = b->extend(feeds);
      ASSERT_EQ(ids->size(), size_t(n));
      for (int s = 0; s < n; ++s) {
        EXPECT_EQ((*ids)[s],
                  argmax(std::span(logits).subspan(size_t(s) * kSmallVocab, kSmallVocab)))
            << "graphs " << graphs << " step " << k << " sample " << s;
        next[s] = (*ids)[s];
      }
    }
  }
  unsetenv("HEADSURGEON_CUDA_GRAPHS");
}

// The bf16 engine with heads of dimension 64 on sequences of 150 and 70 tokens: attention on
// tensor cores against the same engine with HEADSURGEON_TENSOR_CORES=0 (the CUDA-core kernel,
// fp32 q, k, v and probabilities). What differs is the rounding of q, k, v and p to bf16 inside
// the attention, on a model whose every output is of order one: logits within 1e-2 of their
// scale, NLL 1e-3 relative, head metrics 1e-3 (on the CPU emulation of the runtime: 1.7e-3 and
// 1.9e-4).
TEST_F(Gpu, Bf16EngineOnTensorCoresMatchesCudaCores) {
  const auto model = small_bloom("tc");
  auto gpu = gpu_engine(*model, "bf16");
  std::mt19937 rng(test_seed() + 9);
  const std::vector<std::vector<int32_t>> seqs = {small_ids(rng, 150), small_ids(rng, 70)};
  ForwardOptions o;
  o.logits = o.nll = o.head_stats = true;
  const auto tc = gpu->forward(seqs, o);
  ::setenv("HEADSURGEON_TENSOR_CORES", "0", 1);
  const auto cc = gpu->forward(seqs, o);
  ::unsetenv("HEADSURGEON_TENSOR_CORES");
  for (size_t i = 0; i < seqs.size(); ++i) {
    EXPECT_LE(rel_err(tc[i].logits, cc[i].logits), 1e-2) << "sequence " << i;
    EXPECT_NEAR(tc[i].nll_sum, cc[i].nll_sum, 1e-3 * std::abs(cc[i].nll_sum)) << "sequence " << i;
    for (size_t k = 0; k < cc[i].bos_mass.size(); ++k) {
      EXPECT_NEAR(tc[i].bos_mass[k], cc[i].bos_mass[k], 1e-3) << "sequence " << i << " head " << k;
      EXPECT_NEAR(tc[i].entropy[k], cc[i].entropy[k], 1e-3) << "sequence " << i << " head " << k;
      EXPECT_NEAR(tc[i].local_mass[k], cc[i].local_mass[k], 1e-3)
          << "sequence " << i << " head " << k;
    }
  }
}

}  // namespace
}  // namespace hs
