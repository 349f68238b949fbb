// One linear layer on the CPU, fp32 (OpenBLAS sgemm/sgemv on fp32 weights) against bf16
// products (linear_forward_bf16 on bf16 weights, the activations converted per call; bf16 with
// the AVX512-BF16 kernel, bf16_avx2 with the AVX2 one), on the shapes of bloom-1b7's diagnosis (71
// rows) and of bloom-560m's decoding (1 row). The weights stay in cache between iterations, so this
// is the products' speed, not memory's (NOTES.md, 2026-11-26). Usage: build-cpu/bench/bench_linear
// [--benchmark_min_time=0.5]
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "io/dtype.h"
#include "ops/cpu/ops.h"

namespace {

struct Operands {
  std::vector<float> x, w32, out;
  std::vector<uint16_t> w16;
  Operands(int64_t N, int64_t IC, int64_t OC) : x(N * IC), w32(OC * IC), out(N * OC), w16(OC * IC) {
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0, 1);
    for (auto& v : x) v = nd(rng);
    for (size_t i = 0; i < w16.size(); ++i) {
      w16[i] = hs::f32_to_bf16(0.02f * nd(rng));
      w32[i] = hs::bf16_to_f32(w16[i]);
    }
  }
};

void set_counters(benchmark::State& s, int64_t N, int64_t IC, int64_t OC) {
  s.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * double(N * IC * OC) * double(s.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void fp32(benchmark::State& s) {
  const int64_t N = s.range(0), IC = s.range(1), OC = s.range(2);
  Operands o(N, IC, OC);
  for (auto _ : s)
    hs::cpu::linear_forward<float>(o.out.data(), o.x.data(), o.w32.data(), nullptr, N, IC, OC);
  set_counters(s, N, IC, OC);
}

template <hs::cpu::Bf16Kernel K>
void bf16_kernel(benchmark::State& s) {
  if (!hs::cpu::cpu_runs(K)) return s.SkipWithError("this CPU lacks the kernel's instructions");
  const int64_t N = s.range(0), IC = s.range(1), OC = s.range(2);
  Operands o(N, IC, OC);
  for (auto _ : s)
    hs::cpu::linear_forward_bf16(o.out.data(), OC, o.x.data(), o.w16.data(), nullptr, N, IC, OC, K);
  set_counters(s, N, IC, OC);
}
void bf16(benchmark::State& s) { bf16_kernel<hs::cpu::Bf16Kernel::avx512>(s); }
void bf16_avx2(benchmark::State& s) { bf16_kernel<hs::cpu::Bf16Kernel::avx2>(s); }

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "IC", "OC"});
  for (auto [IC, OC] : {std::pair{2048, 6144}, {2048, 2048}, {2048, 8192}, {8192, 2048}})
    b->Args({71, IC, OC});
  b->Args({1, 1024, 4096})->Args({1, 4096, 1024});
  b->Unit(benchmark::kMillisecond);
}

BENCHMARK(fp32)->Apply(shapes);
BENCHMARK(bf16)->Apply(shapes);
BENCHMARK(bf16_avx2)->Apply(shapes);

}  // namespace

BENCHMARK_MAIN();
