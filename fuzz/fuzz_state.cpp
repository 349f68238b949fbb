// The state `repair --resume` reads: the input split at the file separator is RUN/state/
// state.json and RUN/state/state.safetensors (an empty part: the file is absent), read for the
// run the seeds come from: golden tiny8 (3 layers x 8 heads, d = 64), plan {"0": [7]}, these
// options.
#include "fuzz_common.h"
#include "surgery/repair.h"

using namespace hs;

namespace {

constexpr std::string_view kOptions = R"({
  "accum": 4, "clip": 1.0, "device": "cpu", "epochs": 2, "eval_every": 1, "eval_steps": 0,
  "init": "xavier-normal", "lr": 0.01, "patience": 6, "reinit": true, "seed": 0, "seq": 32,
  "warmup": 9})";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nlohmann::json options = nlohmann::json::parse(kOptions);
  const auto files = fuzz::split_files(data, size);
  const fuzz::fs::path run = fuzz::scratch_dir();
  const char* names[] = {"state.json", "state.safetensors"};
  for (size_t i = 0; i < std::min(files.size(), std::size(names)); ++i)
    if (!files[i].empty()) fuzz::write_file(run / "state" / names[i], files[i]);

  TargetSlices slices = TargetSlices::zeros(bloom_config(64, 8, 3, 8192), {{0, 7}});
  AdamState adam;
  for (const auto* b : slices.buffers()) {
    adam.m.emplace_back(b->size());
    adam.v.emplace_back(b->size());
  }
  RunState st;
  fuzz::expect_clean([&] { read_run_state(run.string(), slices, adam, st, options); });
  return 0;
}
