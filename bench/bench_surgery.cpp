// Surgical training throughput on one device, for bench/gpu_run.sh and bench/NOTES.md: optimizer
// steps of --accum random sequences of --seq tokens on a plan's target heads (re-initialised),
// timed after one warm-up step. Prints one JSON line: tokens/s, ms per step, peak device memory.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "backend/backend.h"
#include "surgery/plan.h"
#include "util/files.h"

int main(int argc, char** argv) {
  CLI::App app("Times surgical training steps of a plan on a model (random tokens).");
  std::string model, plan_path, device = "auto", dtype = "auto";
  int seq = 512, accum = 8, steps = 4;
  app.add_option("MODEL", model, "checkpoint directory")->required();
  app.add_option("--plan", plan_path, "plan JSON (its targets are trained)")->required();
  app.add_option("--device", device, "auto, cpu or cuda")->capture_default_str();
  app.add_option("--gpu-dtype", dtype, "auto, bf16, f16 or f32")->capture_default_str();
  app.add_option("--seq", seq, "tokens per sequence")->capture_default_str();
  app.add_option("--accum", accum, "sequences per optimizer step")->capture_default_str();
  app.add_option("--steps", steps, "timed optimizer steps (after one warm-up step)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    const hs::DeviceKind kind = hs::resolve_device(device);
    hs::Model m(model, hs::ModelOptions{0});
    const hs::ModelConfig& c = m.config();
    const hs::Plan plan = hs::Plan::from_json(hs::read_json_file(plan_path), plan_path,
                                              int(c.n_layer), int(c.n_head));
    const auto targets = plan.target_list();
    auto s = hs::make_surgery(m, kind, dtype, targets, {5e-5, 0.9, 0.999, 1e-8, 0.0}, 1);
    hs::TargetSlices init = s->masters();
    hs::reinitialize(init, hs::InitKind::XavierNormal, 0);
    s->set(init, hs::AdamState{});
    std::mt19937 rng(0);
    std::vector<std::vector<int32_t>> seqs(size_t(accum), std::vector<int32_t>(size_t(seq), 0));
    std::vector<const std::vector<int32_t>*> batch;
    for (auto& q : seqs) batch.push_back(&q);
    auto one_step = [&] {
      for (auto& q : seqs)
        for (auto& x : q) x = int32_t(5 + rng() % uint32_t(std::min<int64_t>(c.vocab - 5, 250000)));
      const double loss = s->accumulate(batch, 1.0 / (double(accum) * (seq - 1)));
      s->step(5e-5, 1.0);
      return loss;
    };
    one_step();  // warm-up: allocations, cuBLAS heuristics
    const auto t0 = std::chrono::steady_clock::now();
    double loss = 0;
    for (int i = 0; i < steps; ++i) loss = one_step();
    s->masters();  // waits for the device
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const nlohmann::json j = {{"what", "train"},
                              {"model", model},
                              {"device", s->engine().device()},
                              {"targets", targets.size()},
                              {"seq", seq},
                              {"accum", accum},
                              {"steps", steps},
                              {"loss", loss},
                              {"step_ms", sec / steps * 1e3},
                              {"tok_s", double(steps) * accum * seq / sec},
                              {"peak_gib", double(s->device_memory_bytes()) / double(1 << 30)}};
    std::printf("%s\n", j.dump().c_str());
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "bench_surgery: error: %s\n", ex.what());
    return 1;
  }
  return 0;
}
