// Linear layers over bf16 weights, fp32 accumulation, with one of two kernels: AVX512-BF16 dot
// products (vdpbf16ps), or on CPUs with AVX2 and FMA but without those, the bf16 widened to fp32
// in registers (a 16-bit shift: bf16 is fp32's upper half) and fused multiply-adds, so that such
// a CPU needs no fp32 copy of the model either. Debian's OpenBLAS 0.3.21 is built without
// BUILD_BFLOAT16 (cblas.h declares cblas_sbgemm, the library does not define it), so the product
// is ours. Only this file is compiled for the instructions it uses (target attributes, not
// -march): the binary still runs on any x86-64, and the caller asks cpu_runs() first.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "ops/cpu/ops.h"

// GCC 12's AVX-512 headers initialise their "undefined" vectors from themselves (GCC PR 105593,
// fixed in 12.3): every reduction and extraction would warn.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define HS_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define HS_AVX2_TARGET __attribute__((target("avx2,fma")))

namespace hs::cpu {

namespace {

// A tile of mr rows of x times nr rows of W, both bf16 with K contiguous: out[i, j] =
// sum_k x[i, k] W[j, k] (+ bias[j]).
using Tile = void (*)(float* out, int64_t ldo, const uint16_t* x, const uint16_t* w, int64_t K,
                      const float* bias);

// What linear_forward_bf16 runs with a kernel: its rounding of the activations and its tiles,
// tiles[mr - 1][nr - 1] for 1 <= mr <= 4 rows of x and 1 <= nr <= NR[mr - 1] rows of W.
struct Kernel {
  void (*to_bf16)(uint16_t* out, const float* in, int64_t n);
  const Tile* const* tiles;
  int NR[4];
};

namespace avx512 {

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

// Each of the MR x NR accumulators holds 16 partial sums (one per pair of k) reduced at the end;
// 4 x 4 keeps 16 accumulators and 8 loads per 16 products in registers. One thread, 2,048 x
// 6,144 by 71 rows (bench/bench_linear): 6.0 ms, against 19 ms for OpenBLAS's sgemm on fp32
// weights; from memory instead of cache, 6.4 ms. (Prefetching the next tile's rows, each a 4 KB
// page where the hardware prefetcher stops, gained 2 %: not kept.)
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

template <int MR, int... NR>
constexpr Tile kRow[] = {tile<MR, NR>...};
constexpr const Tile* kTiles[4] = {kRow<1, 1, 2, 3, 4>, kRow<2, 1, 2, 3, 4>, kRow<3, 1, 2, 3, 4>,
                                   kRow<4, 1, 2, 3, 4>};

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

constexpr Kernel kKernel{to_bf16, kTiles, {4, 4, 4, 4}};

}  // namespace avx512

namespace avx2 {

// 16 bf16 at p, or the first n of them (the rest 0) when n < 16: AVX2 has no 16-bit masked
// load, so the last, shorter step goes through a zeroed copy.
HS_AVX2_TARGET __attribute__((always_inline)) inline __m256i load16(const uint16_t* p, int64_t n) {
  if (n >= 16) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  alignas(32) uint16_t t[16] = {};
  std::memcpy(t, p, size_t(n) * sizeof(uint16_t));
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(t));
}

// The 8 even and the 8 odd elements of 16 bf16 as fp32: bf16 is the upper half of an fp32, so
// an even element (the low half of a 32-bit lane) shifts up 16 bits and an odd one is its lane
// with the low half cleared. The order of k is the same for x and W, so products still pair.
// Widening 8 at a time instead (vpmovzxwd + shift, a shuffle and a shift per 8) made the kernel
// 15 % slower (71 x 2,048 x 6,144, 1 thread: 21.0 ms against 18.2 ms of CPU time).
HS_AVX2_TARGET __attribute__((always_inline)) inline __m256 even(__m256i v) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
HS_AVX2_TARGET __attribute__((always_inline)) inline __m256 odd(__m256i v) {
  return _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(int(0xffff0000u))));
}

// The products of one 16-element step of k (n < 16: the last, shorter one) into the
// accumulators: first the even elements of every pair, then the odd ones, each fp32 product
// rounded and added in that order.
template <int MR, int NR>
HS_AVX2_TARGET __attribute__((always_inline)) inline void step(__m256 (&acc)[MR][NR],
                                                               const uint16_t* x, const uint16_t* w,
                                                               int64_t K, int64_t k, int64_t n) {
  __m256i b[NR];
  for (int j = 0; j < NR; ++j) b[j] = load16(w + j * K + k, n);
  for (int i = 0; i < MR; ++i) {
    const __m256 a = even(load16(x + i * K + k, n));
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(a, even(b[j]), acc[i][j]);
  }
  for (int i = 0; i < MR; ++i) {
    const __m256 a = odd(load16(x + i * K + k, n));
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(a, odd(b[j]), acc[i][j]);
  }
}

// The 8 lanes of v summed in a fixed order (halves, then quarters, then the last pair).
HS_AVX2_TARGET __attribute__((always_inline)) inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// Each of the MR x NR accumulators holds 8 partial sums (one per pair of k) reduced at the end.
// Tiles of 4 x 2, 3 x 3, 2 x 4 and 1 x 4 keep their loop in the 16 registers; 4 x 3 left no
// register for the mask of odd() and kept 4 accumulators on the stack: 27.1 ms for 71 x 2,048 x
// 6,144 on 1 thread, 18.2 ms (98 GFLOP/s, OpenBLAS's sgemm on fp32 weights 20 ms) with 4 x 2.
// One row of x by 4 rows of W, not 2: 0.13 ms against 0.21 for 1 x 1,024 x 4,096.
template <int MR, int NR>
HS_AVX2_TARGET void tile(float* out, int64_t ldo, const uint16_t* x, const uint16_t* w, int64_t K,
                         const float* bias) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) step<MR, NR>(acc, x, w, K, k, 16);
  if (k < K) step<MR, NR>(acc, x, w, K, k, K - k);
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) out[i * ldo + j] = sum8(acc[i][j]) + (bias ? bias[j] : 0.0f);
}

template <int MR, int... NR>
constexpr Tile kRow[] = {tile<MR, NR>...};
constexpr const Tile* kTiles[4] = {kRow<1, 1, 2, 3, 4>, kRow<2, 1, 2, 3, 4>, kRow<3, 1, 2, 3>,
                                   kRow<4, 1, 2>};

// 8 floats to bf16 in the low halves of 32-bit lanes, exactly as f32_to_bf16 (io/dtype.h):
// nearest even by adding 0x7fff and the lowest kept bit; a NaN keeps its upper half, made quiet.
HS_AVX2_TARGET __attribute__((always_inline)) inline __m256i round8(const float* p) {
  const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                         _mm256_set1_epi32(0x7f800000));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb);
  const __m256i q = _mm256_or_si256(u, _mm256_set1_epi32(0x400000));
  return _mm256_srli_epi32(_mm256_blendv_epi8(r, q, nan), 16);
}

// 16 floats at p to bf16 at o. packus interleaves the 128-bit halves of its operands; the
// permute restores the order.
HS_AVX2_TARGET __attribute__((always_inline)) inline void round16(uint16_t* o, const float* p) {
  const __m256i h = _mm256_packus_epi32(round8(p), round8(p + 8));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), _mm256_permute4x64_epi64(h, 0xd8));
}

// Round to nearest even, 16 at a time (the tail through a zero-padded copy).
HS_AVX2_TARGET void to_bf16(uint16_t* out, const float* in, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) round16(out + i, in + i);
  if (i < n) {
    alignas(32) float f[16] = {};
    alignas(32) uint16_t h[16];
    std::copy_n(in + i, n - i, f);
    round16(h, f);
    std::copy_n(h, n - i, out + i);
  }
}

constexpr Kernel kKernel{to_bf16, kTiles, {4, 4, 3, 2}};

}  // namespace avx2

}  // namespace

bool cpu_runs(Bf16Kernel k) {
  __builtin_cpu_init();
  switch (k) {
    case Bf16Kernel::avx512:
      return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
    case Bf16Kernel::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Bf16Kernel::none:
      break;
  }
  return false;
}

Bf16Kernel best_bf16_kernel() {
  for (Bf16Kernel k : {Bf16Kernel::avx512, Bf16Kernel::avx2})
    if (cpu_runs(k)) return k;
  return Bf16Kernel::none;
}

void linear_forward_bf16(float* out, int64_t ldo, const float* inp, const uint16_t* W,
                         const float* bias, int64_t N, int64_t IC, int64_t OC, Bf16Kernel kernel) {
  if (N == 0 || OC == 0) return;
  const Kernel& kern = kernel == Bf16Kernel::avx512 ? avx512::kKernel : avx2::kKernel;
  // The activations once to bf16 (the product's only rounding beyond fp32 accumulation).
  thread_local std::vector<uint16_t> x16;
  x16.resize(size_t(N * IC));
  kern.to_bf16(x16.data(), inp, N * IC);
  // Inside the team x16 names each worker's own (empty) vector: the team reads this pointer.
  const uint16_t* x = x16.data();
  // Blocks of W rows of ~128 KB stay in L2 while every 4-row slice of x passes over them. The
  // threads take blocks as they come (dynamic), so a thread descheduled on a shared machine leaves
  // its share to the other; the team still meets at the end (under load 3 on 2 cores perf shows
  // about half the samples spinning in libgomp, static or dynamic). Each output is one dot
  // product in a fixed order, so a row's result does not depend on N or on the thread count.
  // Blocks hold a whole number of tiles of every width, so only OC's end takes narrower tiles.
  const int64_t q = std::lcm(std::lcm(kern.NR[0], kern.NR[1]), std::lcm(kern.NR[2], kern.NR[3]));
  const int64_t nb = std::max<int64_t>(q, (int64_t(64) << 10) / std::max<int64_t>(IC, 1)) / q * q;
  const int64_t blocks = (OC + nb - 1) / nb;
#pragma omp parallel for schedule(dynamic) if (blocks > 1 && N * IC * OC > (1 << 18))
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t o0 = b * nb, o1 = std::min(OC, o0 + nb);
    for (int64_t i = 0; i < N; i += 4) {
      const int64_t mr = std::min<int64_t>(4, N - i), nr = kern.NR[mr - 1];
      for (int64_t o = o0; o < o1; o += nr)
        kern.tiles[mr - 1][std::min<int64_t>(nr, o1 - o) - 1](
            out + i * ldo + o, ldo, x + i * IC, W + o * IC, IC, bias ? bias + o : nullptr);
    }
  }
}

}  // namespace hs::cpu
