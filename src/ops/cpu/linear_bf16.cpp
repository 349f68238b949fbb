// Linear layers over bf16 weights with AVX512-BF16 dot products (vdpbf16ps), fp32 accumulation.
// Debian's OpenBLAS 0.3.21 is built without BUILD_BFLOAT16 (cblas.h declares cblas_sbgemm, the
// library does not define it), so the product is ours. Only this file is compiled for the
// instructions it uses (a target attribute, not -march): the binary still runs on any x86-64,
// and the caller asks cpu_has_bf16_dot() first.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "ops/cpu/ops.h"

// GCC 12's AVX-512 headers initialise their "undefined" vectors from themselves (GCC PR 105593,
// fixed in 12.3): every reduction and extraction would warn.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define HS_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace hs::cpu {

namespace {

// 32 bf16 at p, or the first n of them (the rest 0) when n < 32. Masked loads only for the last
// step: as the main loop's loads they made the kernel 1.7x slower (2,048 x 6,144 by 71 rows,
// 1 thread: 10.8 ms against 6.5 ms).
HS_BF16_TARGET __attribute__((always_inline)) inline __m512bh load32(const uint16_t* p, int64_t n) {
  if (n >= 32) return (__m512bh)_mm512_loadu_si512(p);
  return (__m512bh)_mm512_maskz_loadu_epi16(__mmask32((uint64_t(1) << n) - 1), p);
}

// The products of one 32-element step of k (n < 32: the last, shorter one) into the
// accumulators.
template <int MR, int NR>
HS_BF16_TARGET __attribute__((always_inline)) inline void step(__m512 (&acc)[MR][NR],
                                                               const uint16_t* x, const uint16_t* w,
                                                               int64_t K, int64_t k, int64_t n) {
  __m512bh a[MR];
  for (int i = 0; i < MR; ++i) a[i] = load32(x + i * K + k, n);
  for (int j = 0; j < NR; ++j) {
    const __m512bh b = load32(w + j * K + k, n);
    for (int i = 0; i < MR; ++i) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], a[i], b);
  }
}

// A tile of MR rows of x times NR rows of W, both bf16 with K contiguous: out[i, j] =
// sum_k x[i, k] W[j, k] (+ bias[j]). Each of the MR x NR accumulators holds 16 partial sums (one
// per pair of k) reduced at the end; 4 x 4 keeps 16 accumulators and 8 loads per 16 products in
// registers. One thread, 2,048 x 6,144 by 71 rows (bench/bench_linear): 6.0 ms, against 19 ms
// for OpenBLAS's sgemm on fp32 weights; from memory instead of cache, 6.4 ms. (Prefetching the
// next tile's rows, each a 4 KB page where the hardware prefetcher stops, gained 2 %: not kept.)
template <int MR, int NR>
HS_BF16_TARGET void tile(float* out, int64_t ldo, const uint16_t* x, const uint16_t* w, int64_t K,
                         const float* bias) {
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) step<MR, NR>(acc, x, w, K, k, 32);
  if (k < K) step<MR, NR>(acc, x, w, K, k, K - k);
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      out[i * ldo + j] = _mm512_reduce_add_ps(acc[i][j]) + (bias ? bias[j] : 0.0f);
}

using Tile = void (*)(float*, int64_t, const uint16_t*, const uint16_t*, int64_t, const float*);
template <int MR>
constexpr Tile kRow[4] = {tile<MR, 1>, tile<MR, 2>, tile<MR, 3>, tile<MR, 4>};
constexpr const Tile* kTiles[4] = {kRow<1>, kRow<2>, kRow<3>, kRow<4>};

// Round to nearest even, 16 at a time (NaN stays NaN), as f32_to_bf16 (io/dtype.h).
HS_BF16_TARGET void to_bf16(uint16_t* out, const float* in, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(in + i)));
  if (i < n) {
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(out + i, m,
                             (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, in + i)));
  }
}

}  // namespace

bool cpu_has_bf16_dot() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}

void linear_forward_bf16(float* out, int64_t ldo, const float* inp, const uint16_t* W,
                         const float* bias, int64_t N, int64_t IC, int64_t OC) {
  if (N == 0 || OC == 0) return;
  // The activations once to bf16 (the product's only rounding beyond fp32 accumulation).
  thread_local std::vector<uint16_t> x16;
  x16.resize(size_t(N * IC));
  to_bf16(x16.data(), inp, N * IC);
  // Inside the team x16 names each worker's own (empty) vector: the team reads this pointer.
  const uint16_t* x = x16.data();
  // Blocks of W rows of ~128 KB stay in L2 while every 4-row slice of x passes over them. The
  // threads take blocks as they come (dynamic), so a thread descheduled on a shared machine leaves
  // its share to the other; the team still meets at the end (under load 3 on 2 cores perf shows
  // about half the samples spinning in libgomp, static or dynamic). Each output is one dot
  // product in a fixed order, so a row's result does not depend on N or on the thread count.
  const int64_t nb = std::max<int64_t>(4, (int64_t(64) << 10) / std::max<int64_t>(IC, 1)) / 4 * 4;
  const int64_t blocks = (OC + nb - 1) / nb;
#pragma omp parallel for schedule(dynamic) if (blocks > 1 && N * IC * OC > (1 << 18))
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t o0 = b * nb, o1 = std::min(OC, o0 + nb);
    for (int64_t i = 0; i < N; i += 4) {
      const int64_t mr = std::min<int64_t>(4, N - i);
      for (int64_t o = o0; o < o1; o += 4)
        kTiles[mr - 1][std::min<int64_t>(4, o1 - o) - 1](out + i * ldo + o, ldo, x + i * IC,
                                                         W + o * IC, IC, bias ? bias + o : nullptr);
    }
  }
}

}  // namespace hs::cpu
