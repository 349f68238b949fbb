// Whole-model timings on one device, for bench/gpu_run.sh and bench/NOTES.md: the diagnosis
// forward pass (head statistics), greedy decoding with the KV cache, and perplexity scoring.
// Each measurement is the median of repeated runs after warm-up; results are JSON lines.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "backend/backend.h"
#include "eval/generate.h"
#ifdef HEADSURGEON_HAVE_CUDA
#include "cuda/runtime.h"
#endif

namespace {

template <class F>
double median_seconds(int warm, int reps, F&& f) {
  for (int i = 0; i < warm; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Times the diagnosis forward, greedy decoding and perplexity of one model.");
  std::string model, device = "auto", dtype = "auto";
  int T = 60, diag_batch = 1, new_tokens = 100, prompt_len = 8, samples = 1, ppl_len = 512,
      ppl_batch = 8, reps = 10;
  std::vector<std::string> what = {"diagnose", "decode", "ppl"};
  app.add_option("MODEL", model, "checkpoint directory")->required();
  app.add_option("--device", device, "auto, cpu or cuda")->capture_default_str();
  app.add_option("--gpu-dtype", dtype, "auto, bf16, f16 or f32")->capture_default_str();
  app.add_option("--what", what, "diagnose, decode, ppl")->capture_default_str();
  app.add_option("--T", T, "diagnosis prompt length")->capture_default_str();
  app.add_option("--diag-batch", diag_batch, "prompts per diagnosis call")->capture_default_str();
  app.add_option("--new-tokens", new_tokens, "greedy tokens after the prompt")
      ->capture_default_str();
  app.add_option("--prompt-length", prompt_len, "prompt tokens before decoding (long: attention)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--n", samples, "samples of the prompt decoded together (generate --n)")
      ->capture_default_str();
  app.add_option("--ppl-length", ppl_len, "tokens per scored sequence")->capture_default_str();
  app.add_option("--ppl-batch", ppl_batch, "sequences per perplexity call")->capture_default_str();
  app.add_option("--reps", reps, "timed repetitions of the diagnosis")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    const auto t0 = std::chrono::steady_clock::now();
    const hs::DeviceKind kind = hs::resolve_device(device);
    // The CPU keeps converted fp32 weights resident; the GPU gets its own copy, so no conversion.
    auto m =
        std::make_unique<hs::Model>(model, hs::ModelOptions{kind == hs::DeviceKind::cpu ? -1 : 0});
    auto e = hs::make_engine(*m, kind, dtype);
    const double load =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t V = e->config().vocab;
    std::mt19937 rng(0);
    auto random_ids = [&](int n) {
      std::vector<int32_t> ids(n);
      for (auto& x : ids) x = int32_t(5 + rng() % uint32_t(std::min<int64_t>(V - 5, 250000)));
      return ids;
    };
    auto emit = [&](nlohmann::json j) {
      j["model"] = model;
      j["device"] = e->device();
      std::printf("%s\n", j.dump().c_str());
      std::fflush(stdout);
    };
    emit({{"what", "load"}, {"seconds", load}});
    for (const std::string& w : what) {
      if (w == "diagnose") {
        std::vector<std::vector<int32_t>> seqs;
        for (int i = 0; i < diag_batch; ++i) seqs.push_back(random_ids(T));
        hs::ForwardOptions o;
        o.head_stats = true;
        const double s = median_seconds(3, reps, [&] { e->forward(seqs, o); });
        const char* tc = std::getenv("HEADSURGEON_TENSOR_CORES");
        nlohmann::json j = {{"what", "diagnose"},
                            {"T", T},
                            {"batch", diag_batch},
                            {"ms", s * 1e3},
                            {"tensor_cores", !(tc && std::string(tc) == "0")}};
#ifdef HEADSURGEON_HAVE_CUDA
        // Device memory held at the peak so far (weights included): the long-T rows' "memory".
        if (kind == hs::DeviceKind::cuda)
          j["peak_gib"] = double(hs::cuda::peak_allocated_bytes()) / double(1 << 30);
#endif
        emit(j);
      } else if (w == "decode") {
        const auto prompt = random_ids(prompt_len);
        hs::GenerateOptions g;
        g.max_new_tokens = new_tokens;
        g.sampling.temperature = 0;
        g.stop_at_eos = false;
        g.n = samples;
        const double s = median_seconds(1, 3, [&] { hs::generate(*e, prompt, g); });
        // tok_s counts every sample's tokens: --n 8 against --n 1 is the batching's gain.
        emit({{"what", "decode"},
              {"prompt", prompt_len},
              {"new_tokens", new_tokens},
              {"n", samples},
              {"tok_s", double(new_tokens) * samples / s}});
      } else if (w == "ppl") {
        std::vector<std::vector<int32_t>> seqs;
        for (int i = 0; i < ppl_batch; ++i) seqs.push_back(random_ids(ppl_len));
        hs::ForwardOptions o;
        o.nll = true;
        const double s = median_seconds(1, 3, [&] { e->forward(seqs, o); });
        emit(
            {{"what", "ppl"}, {"tokens", ppl_len * ppl_batch}, {"tok_s", ppl_len * ppl_batch / s}});
      } else {
        std::fprintf(stderr, "bench_engine: unknown --what %s\n", w.c_str());
        return 2;
      }
    }
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "bench_engine: error: %s\n", ex.what());
    return 1;
  }
  return 0;
}
