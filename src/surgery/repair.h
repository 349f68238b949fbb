// The surgical repair run (docs/numerics.md §3): re-initialise the target heads, train only their
// slices on a corpus, evaluate every few epochs, keep checkpoints, stop early; resumable and
// safe to interrupt.
#pragma once

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "model/slices.h"

namespace hs {

struct RepairOptions {
  std::string model, plan, out_dir;
  std::string device = "cpu", gpu_dtype = "auto";  // where to train (backend/backend.h)
  std::string device_from = "--device";            // for error messages
  std::vector<std::string> corpus;  // files or folders (recursively, sorted): text, JSON lines, .gz
  std::string text_field = "text";  // the document's field in a JSON line
  int64_t max_tokens = 0;           // use the corpus's first N tokens; 0 = all
  int epochs = 30;
  double lr = 5e-5;
  int accum = 8, seq = 512;
  int64_t warmup = -1;  // -1 = min(100, total_steps / 4)
  double clip = 1.0;
  int eval_every = 3;      // epochs
  int64_t eval_steps = 0;  // also every N optimizer steps (sub-epoch sweeps); 0 = off
  int patience = 6;        // evaluations without held-out improvement before stopping
  // The resumable state is also saved every N steps and every M minutes of training (0: off),
  // besides at each evaluation and on Ctrl-C: what a kill loses.
  int64_t save_every_steps = 0;
  double save_every_minutes = 5;
  uint64_t seed = 0;
  InitKind init = InitKind::XavierNormal;
  bool reinit = true;
  std::string heldout;  // file with one prompt per line; empty = the paper's 12 prompts
  bool resume = false;
  int train_ppl_chunks = 8;  // fixed sample of corpus chunks for the training PPL
  int gen_tokens = 16;
  bool quiet = false;
  int64_t interrupt_after_steps = 0;  // testing: behave as if Ctrl-C came after this step
};

// The counters of a run, saved with the slices and moments in RUN/state (state.json).
struct RunState {
  int64_t step = 0;            // optimizer steps done
  double best_ppl = INFINITY;  // best held-out PPL so far
  int64_t best_step = -1;
  int evals_since_best = 0;
  double loss_sum = 0;  // training loss since the last evaluation
  int64_t loss_count = 0;
  nlohmann::json trajectory = nlohmann::json::array();
  bool eval_pending = false;  // the evaluation due after `step` was interrupted: --resume does it
};

// What --resume reads: RUN/state/state.json, whose options must match `options`, and
// RUN/state/state.safetensors into the slices and Adam moments of the plan. Throws hs::Error
// naming the file when either is not a state of this run.
void read_run_state(const std::string& run, TargetSlices& slices, AdamState& adam, RunState& st,
                    const nlohmann::json& options);

// Returns the process exit code: 0 finished (or stopped early), 130 interrupted: after Ctrl-C or
// SIGTERM (util/interrupt.h; the caller installs the handlers) the step or evaluation in
// progress is abandoned at its next layer and the state of the last completed step saved.
// Interrupted before training starts (tokenizing the corpus included), it throws hs::Interrupted.
// Bad input throws hs::Error naming the file; a NaN/inf loss throws after keeping the last good
// checkpoint and state. The corpus is tokenized into RUN_DIR/corpus.tokens (text/token_cache.h),
// which --resume maps instead of reading the corpus again.
int run_repair(const RepairOptions& o);

}  // namespace hs
