// The attention kernels alone, for bench/gpu_run.sh and bench/NOTES.md: forward (with the head
// statistics and the log-sum-exp, as a diagnosis and a training pass run it) and backward of one
// sequence of T tokens with bloom-1b7's heads (16 x 128), on tensor cores in bf16 and on CUDA
// cores in fp32 (the kernels 16-bit models used before). TFLOP/s count the causal products only:
// forward 2 products of T(T+1)/2 x hd per head, backward 2.5 times the forward (FlashAttention's
// convention; our backward recomputes QK^T and dP once more per kernel). JSON lines out.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cuda/runtime.h"
#include "ops/cuda/ops.cuh"

namespace {

using hs::cuda::DeviceBuffer;

// Milliseconds per call: one warm-up, then `reps` calls between two events.
double time_ms(int reps, const std::function<void()>& f) {
  f();
  cudaEvent_t a, b;
  hs::cuda::check(cudaEventCreate(&a), "event");
  hs::cuda::check(cudaEventCreate(&b), "event");
  hs::cuda::check(cudaEventRecord(a), "event");
  for (int i = 0; i < reps; ++i) f();
  hs::cuda::check(cudaEventRecord(b), "event");
  hs::cuda::check(cudaEventSynchronize(b), "event");
  float ms = 0;
  hs::cuda::check(cudaEventElapsedTime(&ms, a, b), "event");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return double(ms) / reps;
}

template <class T>
DeviceBuffer upload(const std::vector<T>& h) {
  DeviceBuffer d(h.size() * sizeof(T));
  hs::cuda::check(cudaMemcpy(d.as<void>(), h.data(), d.bytes(), cudaMemcpyHostToDevice), "upload");
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Times the attention kernels (tensor cores and CUDA cores) on one sequence.");
  std::vector<int> lengths = {512, 2048, 4096, 8192, 16384};
  int H = 16, hd = 128, reps = 5, cuda_core_max = 8192;
  app.add_option("--T", lengths, "sequence lengths")->capture_default_str();
  app.add_option("--heads", H, "heads")->capture_default_str();
  app.add_option("--hd", hd, "head dimension (64 or 128)")->capture_default_str();
  app.add_option("--reps", reps, "timed calls per measurement")->capture_default_str();
  app.add_option("--cuda-core-max", cuda_core_max, "longest T timed on the CUDA-core kernels")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (const std::string why = hs::cuda::unusable_reason(); !why.empty()) {
    std::fprintf(stderr, "bench_attention: error: %s\n", why.c_str());
    return 1;
  }
  try {
    using bf16 = __nv_bfloat16;
    for (const int T : lengths) {
      const int d = H * hd;
      // Queries, keys and values uniform in [-2, 2): scores of a few units, as in trained models.
      std::vector<float> qkv(size_t(T) * 3 * d);
      uint64_t s = 88172645463325252ull;
      for (float& x : qkv) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x = float(s >> 40) / float(1 << 24) * 4.0f - 2.0f;
      }
      std::vector<float> slopes(H);
      for (int h = 0; h < H; ++h) slopes[h] = std::pow(2.0f, -8.0f * float(h + 1) / float(H));
      const std::vector<int32_t> zeros(T, 0), n_rows = {T};
      DeviceBuffer QKV = upload(qkv), Sl = upload(slopes), RS = upload(zeros),
                   Z = upload(std::vector<int32_t>{0}), NR = upload(n_rows), K(size_t(T) * d * 4),
                   V(size_t(T) * d * 4), Ctx(size_t(T) * d * 4), G(size_t(T) * d * 4),
                   Stats(size_t(3) * H * T * 4), Lse(size_t(H) * T * 4), D(size_t(H) * T * 4),
                   DQ(size_t(T) * 3 * d * 4);
      hs::cuda::check(cudaMemset(G.as<void>(), 0, G.bytes()), "memset");
      hs::cuda::check(cudaMemset(DQ.as<void>(), 0, DQ.bytes()), "memset");
      const hs::cuda::RowMap m{
          RS.as<int32_t>(), Z.as<int32_t>(), NR.as<int32_t>(), Z.as<int32_t>(), T, 1};
      hs::cuda::qkv_split(QKV.as<float>(), K.as<float>(), V.as<float>(), nullptr, 0, m, H, hd, T,
                          nullptr);
      const double flop = 4.0 * (double(T) * (T + 1) / 2) * hd * H;
      auto emit = [&](const char* kernel, double ms, double f) {
        std::printf("%s\n", nlohmann::json{{"what", "attention"},
                                           {"kernel", kernel},
                                           {"T", T},
                                           {"heads", H},
                                           {"hd", hd},
                                           {"ms", ms},
                                           {"tflops", f / (ms * 1e-3) / 1e12}}
                                .dump()
                                .c_str());
        std::fflush(stdout);
      };
      const hs::AlibiParams al{};
      emit("tc_forward",
           time_ms(reps,
                   [&] {
                     hs::cuda::alibi_attention_forward_tc<bf16>(
                         Ctx.as<bf16>(), Stats.as<float>(), QKV.as<float>(), K.as<float>(),
                         V.as<float>(), Sl.as<float>(), al, m, H, hd, T, T, nullptr,
                         Lse.as<float>());
                   }),
           flop);
      emit("tc_backward",
           time_ms(reps,
                   [&] {
                     hs::cuda::alibi_attention_backward_tc<bf16>(
                         DQ.as<float>(), G.as<float>(), QKV.as<float>(), K.as<float>(),
                         V.as<float>(), Ctx.as<bf16>(), Lse.as<float>(), D.as<float>(),
                         Sl.as<float>(), al, m, H, hd, T, T, nullptr, nullptr);
                   }),
           2.5 * flop);
      if (T > cuda_core_max) continue;
      emit("cuda_core_forward",
           time_ms(reps,
                   [&] {
                     hs::cuda::alibi_attention_forward<float>(
                         Ctx.as<float>(), Stats.as<float>(), nullptr, nullptr, QKV.as<float>(),
                         K.as<float>(), V.as<float>(), Sl.as<float>(), al, m, H, hd, T, T, nullptr,
                         Lse.as<float>());
                   }),
           flop);
      emit("cuda_core_backward",
           time_ms(reps,
                   [&] {
                     hs::cuda::alibi_attention_backward<float>(
                         DQ.as<float>(), G.as<float>(), QKV.as<float>(), K.as<float>(),
                         V.as<float>(), Ctx.as<float>(), Lse.as<float>(), D.as<float>(),
                         Sl.as<float>(), al, m, H, hd, T, T, nullptr, nullptr);
                   }),
           2.5 * flop);
    }
    hs::cuda::check(cudaDeviceSynchronize(), "sync");
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "bench_attention: error: %s\n", ex.what());
    return 1;
  }
  return 0;
}
