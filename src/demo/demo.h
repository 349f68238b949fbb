// The whole story on the built-in demo model, the paper's two passes: diagnose -> plan the band
// -> repair -> diagnose again, with the gradient-only control (same masks, no
// re-initialisation) beside it; then pass 2 on pass 1's best checkpoint, for the sick heads
// outside the band.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

namespace hs {

struct DemoOptions {
  std::string model;    // checkpoint directory (default: the built-in models/demo)
  std::string out_dir;  // figures, plan, diagnoses and the run directories
  std::string corpus;   // repair corpus (default: MODEL/corpus)
  std::string heldout;  // held-out prompts, one per line (default: MODEL/heldout.txt)
  // Tuned on the built-in model: 2 epochs of its 300 KB corpus wake every target; more epochs
  // overfit the corpus (held-out PPL rises while training PPL falls).
  int epochs = 2, seq = 128, accum = 8;
  double lr = 1e-3;
  uint64_t seed = 0;
  bool control = true;  // also run the --no-reinit control of pass 1
  int passes = 2;       // 1: the band only
  // Where the repairs train (backend/backend.h); the measurements stay on the CPU reference.
  std::string device = "cpu", gpu_dtype = "auto", device_from = "--device";
  bool quiet = false;
};

// One repair's outcome: the best checkpoint, diagnosed.
struct DemoArm {
  int targets = 0;
  int recovered = 0;  // targets healthy after
  int healthy_after = 0;
  double ppl_after = 0;
  double seconds = 0;
};

struct DemoResult {
  std::string model;
  int heads = 0, healthy_before = 0;
  std::pair<int, int> band;  // pass 1's, head indices inclusive
  double ppl_before = 0;
  DemoArm surgery;  // pass 1
  bool has_control = false;
  DemoArm control;
  // Pass 2, on pass 1's best checkpoint; 0 targets (and pass 1's figures) when pass 1 left no
  // sick head outside the band.
  bool has_pass2 = false;
  DemoArm pass2;
  double seconds = 0;
  std::string out_dir;

  // The README's contract: targets, recovered, healthy_before, healthy_after, ppl_before,
  // ppl_after (pass 1), band, seconds (the whole demo), plus "control" and "pass2" when they ran.
  nlohmann::json to_json() const;
  std::string render_table() const;
};

DemoResult run_demo(const DemoOptions& o);

}  // namespace hs
