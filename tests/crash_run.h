// A small repair run of the golden model tiny8 for the crash-safety tests: 16 steps per epoch,
// an evaluation (and checkpoint) every 4, the resumable state saved after every step.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "child_process.h"
#include "io/safetensors.h"
#include "scratch_test.h"
#include "test_util.h"

namespace hs::test {

class CrashRun : public ScratchTest<> {
 protected:
  void SetUp() override {
    ScratchTest<>::SetUp();
    write("corpus.txt", random_words(800));
    write("plan.json", R"({"targets": {"0": [7], "2": [4, 6]}, "frozen_watch": {"2": [5]}})");
  }
  std::vector<std::string> repair(const std::string& out, bool resume = false) const {
    // clang-format off
    std::vector<std::string> a = {
        "repair", std::string(HS_TEST_DATA) + "/golden/models/tiny8", "--plan", path("plan.json"),
        "--corpus", path("corpus.txt"), "-o", path(out), "--seq", "32", "--accum", "4",
        "--epochs", std::to_string(epochs_), "--eval-steps", "4", "--gen-tokens", "4",
        "--lr", "1e-2", "--save-every", "1", "-q"};
    // clang-format on
    if (resume) a.push_back("--resume");
    return a;
  }
  // Runs to the end (exit 0 expected) and returns stderr.
  std::string run_to_end(const std::string& out, bool resume = false) const {
    Child c(repair(out, resume));
    EXPECT_EQ(c.wait(), 0) << c.err();
    return c.err();
  }
  int epochs_ = 1;

  // Every checkpoint folder of the run whose name says it is complete (no .tmp-/.old- part):
  // its weights open (header, offsets and sizes checked) and its config parses. Returns how many.
  int complete_checkpoints_load(const std::string& out) const {
    namespace fs = std::filesystem;
    std::vector<fs::path> dirs = {dir_ / out / "best", dir_ / out / "final"};
    if (fs::exists(dir_ / out / "checkpoints"))
      for (const auto& e : fs::directory_iterator(dir_ / out / "checkpoints"))
        dirs.push_back(e.path());
    int n = 0;
    for (const fs::path& d : dirs) {
      const std::string name = d.filename().string();
      if (!fs::exists(d) || name.find(".tmp-") != std::string::npos ||
          name.find(".old-") != std::string::npos)
        continue;
      EXPECT_NO_THROW(SafetensorsFile((d / "model.safetensors").string())) << d;
      EXPECT_NO_THROW(nlohmann::json::parse(slurp(d / "config.json"))) << d;
      ++n;
    }
    return n;
  }
  // The trajectory without its timings, which differ between runs.
  nlohmann::json trajectory(const std::string& out) const {
    auto t = nlohmann::json::parse(slurp(dir_ / out / "trajectory.json"));
    for (auto& e : t) {
      e.erase("seconds");
      e.erase("eval_seconds");
    }
    return t;
  }
  void expect_same_run(const std::string& a, const std::string& b) const {
    EXPECT_EQ(slurp(dir_ / a / "final/model.safetensors"),
              slurp(dir_ / b / "final/model.safetensors"));
    EXPECT_EQ(slurp(dir_ / a / "best/model.safetensors"),
              slurp(dir_ / b / "best/model.safetensors"));
    EXPECT_EQ(trajectory(a), trajectory(b));
  }
};

}  // namespace hs::test
