// The tensor-core attention (ops/cuda/attention_tc.cu) against the CPU twin: forward (context,
// per-row head statistics, log-sum-exp) and backward, in bf16 and fp16, every family's ALiBi
// convention, lengths that are not multiples of the 64- and 32-row tiles, cached keys before the
// new rows, a head mask. The kernels round q, k, v and dctx to 16 bits as they read them, so the
// CPU reference runs in fp32 on the same rounded values: what remains is the rounding of the
// probabilities (and dS) to 16 bits inside the products, of ctx on output, and the order of the
// fp32 sums. Skipped, saying why, where no usable GPU is present (CI).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "golden_data.h"
#include "ops/alibi.h"
#include "ops/cpu/ops.h"
#include "ops/cuda/ops.cuh"
#include "ops/qkv_layout.h"

namespace hs {
namespace {

using test::rel_err;

template <class W>
float round_to(float x) {
  if constexpr (std::is_same_v<W, __nv_bfloat16>)
    return __bfloat162float(__float2bfloat16_rn(x));
  else
    return __half2float(__float2half_rn(x));
}

template <class W>
std::vector<float> rounded(std::vector<float> v) {
  for (float& x : v) x = round_to<W>(x);
  return v;
}

const std::pair<const char*, AlibiParams> kConventions[] = {
    {"bloom", AlibiParams{}},
    {"mpt softmax_scale", AlibiParams{0.3, false, false, false}},
    {"falcon", AlibiParams{0, true, true, false}},
    {"falcon as HF eager", AlibiParams{0, true, true, true}}};

std::vector<float> test_slopes(int H) {
  std::vector<float> s(H);
  for (int h = 0; h < H; ++h) s[h] = std::pow(2.0f, -8.0f * float(h + 1) / float(H + 1));
  return s;
}

// Sequences packed into one pass: sequence b has T[b] new rows after past[b] cached keys.
struct Packed {
  int H, hd, N = 0, cap = 0, B;
  std::vector<int> T, past;
  std::vector<int32_t> row_seq, q_row0;
  Packed(int H_, int hd_, std::vector<int> T_, std::vector<int> past_)
      : H(H_), hd(hd_), B(int(T_.size())), T(std::move(T_)), past(std::move(past_)) {
    for (int b = 0; b < B; ++b) {
      q_row0.push_back(N);
      row_seq.insert(row_seq.end(), T[b], b);
      N += T[b];
      cap = std::max(cap, past[b] + T[b]);
    }
  }
  int max_rows() const { return *std::max_element(T.begin(), T.end()); }
  int d() const { return H * hd; }
  size_t kv_at(int b, int h, int pos) const { return ((size_t(b) * H + h) * cap + pos) * hd; }
};

// Device copies of the pass and its row map.
struct DevicePass {
  DeviceBuffer RS, Q0, NR, P0;
  cuda::RowMap m;
  explicit DevicePass(const Packed& p)
      : RS(upload(p.row_seq)),
        Q0(upload(p.q_row0)),
        NR(upload(std::vector<int32_t>(p.T.begin(), p.T.end()))),
        P0(upload(std::vector<int32_t>(p.past.begin(), p.past.end()))),
        m{RS.as<int32_t>(), Q0.as<int32_t>(), NR.as<int32_t>(), P0.as<int32_t>(), p.N, p.B} {}
};

// Forward on tensor cores against cpu::alibi_attention_forward per sequence. tol: of ctx's
// scale; the statistics and log-sum-exp come from fp32 scores of the same rounded q and k, so
// they agree to fp32 summation order (2e-5).
template <class W>
void expect_forward(std::mt19937& rng, const char* name, const AlibiParams& al, const Packed& p,
                    double tol) {
  const int H = p.H, hd = p.hd, d = p.d(), N = p.N;
  const auto x = rounded<W>(randn(rng, size_t(N) * 3 * d));
  const auto slopes = test_slopes(H);
  // The caches: cached keys and values random, the new rows' from x, the rest NaN.
  std::vector<float> kc(size_t(p.B) * H * p.cap * hd, NAN), vc = kc;
  for (int b = 0; b < p.B; ++b)
    for (int h = 0; h < H; ++h) {
      for (int j = 0; j < p.past[b]; ++j)
        for (int e = 0; e < hd; ++e) {
          kc[p.kv_at(b, h, j) + e] = round_to<W>(randn(rng, 1)[0]);
          vc[p.kv_at(b, h, j) + e] = round_to<W>(randn(rng, 1)[0]);
        }
      for (int t = 0; t < p.T[b]; ++t) {
        const float* row = x.data() + size_t(p.q_row0[b] + t) * 3 * d;
        std::copy_n(row + qkv_row(h, 1, hd), hd, kc.begin() + p.kv_at(b, h, p.past[b] + t));
        std::copy_n(row + qkv_row(h, 2, hd), hd, vc.begin() + p.kv_at(b, h, p.past[b] + t));
      }
    }
  DevicePass dp(p);
  DeviceBuffer X = upload(x), K = upload(kc), V = upload(vc), Sl = upload(slopes),
               Ctx = poisoned(size_t(N) * d * sizeof(W)), Stats = poisoned(size_t(3) * H * N * 4),
               Lse = poisoned(size_t(H) * N * 4);
  cuda::alibi_attention_forward_tc<W>(Ctx.as<W>(), Stats.as<float>(), X.as<float>(), K.as<float>(),
                                      V.as<float>(), Sl.as<float>(), al, dp.m, H, hd, p.cap,
                                      p.max_rows(), nullptr, Lse.as<float>());
  const auto ctx16 = download<W>(Ctx, size_t(N) * d);
  const auto stats = download<float>(Stats, size_t(3) * H * N);
  const auto lse = download<float>(Lse, size_t(H) * N);
  for (int b = 0; b < p.B; ++b) {
    const int T = p.T[b], P = p.past[b];
    const std::string where = std::string(name) + " H=" + std::to_string(H) +
                              " hd=" + std::to_string(hd) + " T=" + std::to_string(T) +
                              " past=" + std::to_string(P);
    cpu::AttnInput<float> in = cpu::fused_qkv(x.data() + size_t(p.q_row0[b]) * 3 * d, T, H, hd);
    in.k = kc.data() + p.kv_at(b, 0, 0);
    in.v = vc.data() + p.kv_at(b, 0, 0);
    in.ldkv = hd;
    in.hskv = int64_t(p.cap) * hd;
    in.past = P;
    std::vector<float> ref(size_t(T) * d), got(size_t(T) * d);
    std::vector<double> sb(H), se(H), sl(H);
    cpu::HeadStatSums sums{sb.data(), se.data(), sl.data()};
    cpu::alibi_attention_forward<float>(ref.data(), d, nullptr, &sums, in, slopes.data(), al, H,
                                        hd);
    for (size_t i = 0; i < got.size(); ++i) got[i] = float(ctx16[size_t(p.q_row0[b]) * d + i]);
    EXPECT_LE(rel_err(got, ref), tol) << where << ": ctx";
    const double scale = alibi_scale<double>(al, hd);
    for (int h = 0; h < H; ++h) {
      double g[3] = {0, 0, 0};
      for (int k = 0; k < 3; ++k)
        for (int t = 0; t < T; ++t) g[k] += stats[(size_t(k) * H + h) * N + p.q_row0[b] + t];
      EXPECT_NEAR(g[0], sb[h], 2e-5 * T) << where << " bos, head " << h;
      EXPECT_NEAR(g[1], se[h], 2e-5 * T * std::max(1.0, std::log(double(P + T))))
          << where << " entropy, head " << h;
      EXPECT_NEAR(g[2], sl[h], 2e-5 * T) << where << " local, head " << h;
      for (int t = 0; t < T; ++t) {  // log-sum-exp in double from the same rounded values
        const float* q = x.data() + size_t(p.q_row0[b] + t) * 3 * d + qkv_row(h, 0, hd);
        double mx = -INFINITY, sum = 0;
        std::vector<double> sc(size_t(P + t) + 1);
        for (int j = 0; j <= P + t; ++j) {
          const float* k = kc.data() + p.kv_at(b, h, j);
          double dot = 0;
          for (int e = 0; e < hd; ++e) dot += double(q[e]) * k[e];
          sc[j] = alibi_score<double>(dot, scale, slopes[h], j, al);
          mx = std::max(mx, sc[j]);
        }
        for (double v : sc) sum += std::exp(v - mx);
        const double want = mx + std::log(sum);
        ASSERT_NEAR(lse[size_t(h) * N + p.q_row0[b] + t], want,
                    2e-5 * std::max(1.0, std::abs(want)))
            << where << " lse, head " << h << " row " << t;
      }
    }
  }
}

// Every convention; head dims 64 and 128; lengths 1 to 200 around the tiles (128 rows, 64 keys),
// one sequence with cached keys; 8, 12 and 16 heads. bf16 rounds p (8 bits) and ctx on output:
// 1e-2 of ctx's scale (measured on the CPU emulation of the runtime: at most 3.0e-3); fp16 (11
// bits): 1e-3 (3.5e-4).
TEST_F(Gpu, TensorCoreAttentionForwardMatchesCpu) {
  std::mt19937 rng(test_seed() + 101);
  for (const auto& [name, al] : kConventions) {
    expect_forward<__nv_bfloat16>(rng, name, al, Packed(2, 64, {1, 65, 130}, {0, 0, 0}), 1e-2);
    expect_forward<__nv_bfloat16>(rng, name, al, Packed(1, 128, {200, 64}, {0, 37}), 1e-2);
    expect_forward<__half>(rng, name, al, Packed(2, 128, {97}, {0}), 1e-3);
  }
  // The golden models' head counts (16 and 8) and a non-power-of-two one (12).
  for (int H : {16, 8, 12})
    expect_forward<__nv_bfloat16>(rng, "bloom", AlibiParams{}, Packed(H, 64, {70}, {0}), 1e-2);
}

// Backward on tensor cores (after its forward) against cpu::alibi_attention_backward on the
// rounded values, per sequence and part (q, k, v) at `tol` of the part's scale; masked heads'
// columns stay exactly 0; a second call adds exactly as much again (accumulation, determinism).
template <class W>
void expect_backward(std::mt19937& rng, const char* name, const AlibiParams& al, const Packed& p,
                     const std::vector<uint8_t>& mask, double tol) {
  const int H = p.H, hd = p.hd, d = p.d(), N = p.N;
  const auto qkv = rounded<W>(randn(rng, size_t(N) * 3 * d));
  const auto dctx = rounded<W>(randn(rng, size_t(N) * d));
  const auto slopes = test_slopes(H);
  std::vector<float> kc(size_t(p.B) * H * p.cap * hd, NAN), vc = kc;
  for (int b = 0; b < p.B; ++b)
    for (int t = 0; t < p.T[b]; ++t)
      for (int h = 0; h < H; ++h) {
        const float* row = qkv.data() + size_t(p.q_row0[b] + t) * 3 * d;
        std::copy_n(row + qkv_row(h, 1, hd), hd, kc.begin() + p.kv_at(b, h, t));
        std::copy_n(row + qkv_row(h, 2, hd), hd, vc.begin() + p.kv_at(b, h, t));
      }
  DevicePass dp(p);
  DeviceBuffer QKV = upload(qkv), G = upload(dctx), K = upload(kc), V = upload(vc),
               Sl = upload(slopes), Mk = upload(mask), Ctx = poisoned(size_t(N) * d * sizeof(W)),
               Lse = poisoned(size_t(H) * N * 4), Dsc = poisoned(size_t(H) * N * 4),
               DQ(size_t(N) * 3 * d * 4);
  cuda::check(cudaMemset(DQ.as<void>(), 0, DQ.bytes()), "memset");
  const uint8_t* mk = mask.empty() ? nullptr : Mk.as<uint8_t>();
  cuda::alibi_attention_forward_tc<W>(Ctx.as<W>(), nullptr, QKV.as<float>(), K.as<float>(),
                                      V.as<float>(), Sl.as<float>(), al, dp.m, H, hd, p.cap,
                                      p.max_rows(), nullptr, Lse.as<float>());
  auto backward = [&] {
    cuda::alibi_attention_backward_tc<W>(DQ.as<float>(), G.as<float>(), QKV.as<float>(),
                                         K.as<float>(), V.as<float>(), Ctx.as<W>(), Lse.as<float>(),
                                         Dsc.as<float>(), Sl.as<float>(), al, dp.m, H, hd, p.cap,
                                         p.max_rows(), mk, nullptr);
  };
  backward();
  const auto got = download<float>(DQ, size_t(N) * 3 * d);
  for (int b = 0; b < p.B; ++b) {
    std::vector<float> ref(size_t(p.T[b]) * 3 * d, 0.0f);
    cpu::alibi_attention_backward<float>(ref.data(), dctx.data() + size_t(p.q_row0[b]) * d,
                                         qkv.data() + size_t(p.q_row0[b]) * 3 * d, slopes.data(),
                                         al, mask.empty() ? nullptr : mask.data(), p.T[b], H, hd);
    for (int k = 0; k < 3; ++k)
      EXPECT_LE(rel_err(qkv_part(got.data(), p.q_row0[b], p.T[b], k, H, hd),
                        qkv_part(ref.data(), 0, p.T[b], k, H, hd)),
                tol)
          << name << " H=" << H << " hd=" << hd << " sequence " << b << " (T=" << p.T[b]
          << ") part "
          << "qkv"[k];
  }
  backward();
  expect_masked_and_doubled(got, download<float>(DQ, got.size()), mask, N, H, hd, name);
}

// Lengths around the 64-key (dk/dv) and 64-row (dq) blocks and their 32-wide inner tiles. The
// probabilities, dS and ctx (through D) are rounded to 16 bits: bf16 1.5e-2 of each part's
// scale (measured on the CPU emulation: at most 6.5e-3), fp16 2e-3 (5.1e-4).
TEST_F(Gpu, TensorCoreAttentionBackwardMatchesCpu) {
  std::mt19937 rng(test_seed() + 102);
  for (const auto& [name, al] : kConventions) {
    expect_backward<__nv_bfloat16>(rng, name, al, Packed(3, 64, {1, 33, 130}, {0, 0, 0}), {1, 0, 1},
                                   1.5e-2);
    expect_backward<__nv_bfloat16>(rng, name, al, Packed(1, 128, {97, 64}, {0, 0}), {}, 1.5e-2);
    expect_backward<__half>(rng, name, al, Packed(2, 128, {70}, {0}), {}, 2e-3);
  }
  for (int H : {16, 8, 12})
    expect_backward<__nv_bfloat16>(rng, "bloom", AlibiParams{}, Packed(H, 64, {70}, {0}), {},
                                   1.5e-2);
}

#ifndef HS_CUDA_EMULATION  // minutes on the CPU emulation of the runtime
// Long inputs on the real GPU: the tensor-core forward at T = 32,768 (bf16) against the CUDA-core
// kernel in fp32 on the same rounded values, every 97th row checked (ctx at 1e-2 of its scale,
// statistics and log-sum-exp at 2e-5); and forward + backward at T = 2,048 against the CPU.
TEST_F(Gpu, TensorCoreAttentionLongInputs) {
  std::mt19937 rng(test_seed() + 103);
  using W = __nv_bfloat16;
  {
    const Packed p(1, 128, {32768}, {0});
    const int d = p.d(), N = p.N, hd = p.hd;
    const auto x = rounded<W>(randn(rng, size_t(N) * 3 * d));
    std::vector<float> kc(size_t(N) * hd), vc(size_t(N) * hd);
    for (int t = 0; t < N; ++t) {
      std::copy_n(x.begin() + size_t(t) * 3 * d + qkv_row(0, 1, hd), hd,
                  kc.begin() + size_t(t) * hd);
      std::copy_n(x.begin() + size_t(t) * 3 * d + qkv_row(0, 2, hd), hd,
                  vc.begin() + size_t(t) * hd);
    }
    DevicePass dp(p);
    DeviceBuffer X = upload(x), K = upload(kc), V = upload(vc), Sl = upload(test_slopes(1)),
                 C16 = poisoned(size_t(N) * d * 2), C32 = poisoned(size_t(N) * d * 4),
                 S16 = poisoned(size_t(3) * N * 4), S32 = poisoned(size_t(3) * N * 4),
                 L16 = poisoned(size_t(N) * 4), L32 = poisoned(size_t(N) * 4);
    cuda::alibi_attention_forward_tc<W>(C16.as<W>(), S16.as<float>(), X.as<float>(), K.as<float>(),
                                        V.as<float>(), Sl.as<float>(), {}, dp.m, 1, hd, N, N,
                                        nullptr, L16.as<float>());
    cuda::alibi_attention_forward<float>(
        C32.as<float>(), S32.as<float>(), nullptr, nullptr, X.as<float>(), K.as<float>(),
        V.as<float>(), Sl.as<float>(), {}, dp.m, 1, hd, N, N, nullptr, L32.as<float>());
    const auto c16 = download<W>(C16, size_t(N) * d);
    const auto c32 = download<float>(C32, size_t(N) * d);
    const auto s16 = download<float>(S16, size_t(3) * N), s32 = download<float>(S32, size_t(3) * N);
    const auto l16 = download<float>(L16, N), l32 = download<float>(L32, N);
    std::vector<float> got, want;
    for (int t = 0; t < N; t += 97) {
      for (int e = 0; e < hd; ++e) {
        got.push_back(float(c16[size_t(t) * d + e]));
        want.push_back(c32[size_t(t) * d + e]);
      }
      for (int k = 0; k < 3; ++k)
        ASSERT_NEAR(s16[size_t(k) * N + t], s32[size_t(k) * N + t],
                    2e-5 * (k == 1 ? std::log(double(t + 2)) : 1.0))
            << "T=32768 statistic " << k << " row " << t;
      ASSERT_NEAR(l16[t], l32[t], 2e-5 * std::max(1.0f, std::abs(l32[t]))) << "lse row " << t;
    }
    EXPECT_LE(rel_err(got, want), 1e-2) << "T=32768 ctx";
  }
  expect_forward<W>(rng, "bloom, long", AlibiParams{}, Packed(1, 128, {2048}, {0}), 1e-2);
  expect_backward<W>(rng, "bloom, long", AlibiParams{}, Packed(1, 128, {2048}, {0}), {}, 1.5e-2);
}
#endif

}  // namespace
}  // namespace hs
