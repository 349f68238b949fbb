// Crash safety of repair (issue 16): a run killed at random moments, or before its first saved
// state, resumes to the weights of an uninterrupted run; a full disk or a file-size limit stops
// the run with one line naming the file and leaves the last checkpoint and state intact.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>

#include "crash_run.h"

namespace {

namespace fs = std::filesystem;
using hs::test::Child;
using hs::test::CrashRun;
using hs::test::slurp;
using Clock = std::chrono::steady_clock;

// Bytes of the regular files under `dir`, tokenizer copies aside (fs::copy_file writes them
// without write(2), so the disk of the shim does not see them).
uintmax_t bytes_under(const fs::path& dir) {
  uintmax_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != "tokenizer.json") n += e.file_size();
  return n;
}

bool has_temporaries(const fs::path& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp-") != std::string::npos || name.find(".old-") != std::string::npos)
      return true;
  }
  return false;
}

TEST_F(CrashRun, ResumeWithoutSavedStateStartsOver) {
  run_to_end("ref");
  // What a process killed during its first steps and evaluation could have left.
  fs::create_directories(dir_ / "run" / "checkpoints" / "step-4.tmp-99999");
  write("run/checkpoints/step-4.tmp-99999/model.safetensors", "half a file");
  write("run/trajectory.json.tmp-99999", "[{\"step\": ");
  write("run/plan.json", R"({"targets": {"0": [7], "2": [4, 6]}, "frozen_watch": {"2": [5]}})");
  auto args = repair("run", true);
  args.erase(std::find(args.begin(), args.end(), "-q"));
  Child c(args);
  ASSERT_EQ(c.wait(), 0) << c.err();
  EXPECT_NE(c.err().find("no saved state in " + path("run") + " yet: starting from the beginning"),
            std::string::npos)
      << c.err();
  EXPECT_NE(c.err().find("cleared 2 unfinished writes"), std::string::npos) << c.err();
  EXPECT_FALSE(has_temporaries(dir_ / "run"));
  expect_same_run("ref", "run");
}

// The disk fills up during the second evaluation's checkpoint (step 8): exit 1 with one line
// naming that file; the checkpoint of step 4 and the state of step 7 are whole; --resume on a
// disk with room again ends where the uninterrupted run ended.
TEST_F(CrashRun, DiskFullStopsWithOneLineAndResumes) {
  run_to_end("ref");
  // How many bytes a run writes up to its first evaluation: a run stopped right after it.
  auto probe = repair("probe");
  probe.insert(probe.end(), {"--interrupt-after-steps", "4"});
  {
    Child p(probe);
    ASSERT_EQ(p.wait(), 130) << p.err();
  }
  const uintmax_t model = fs::file_size(dir_ / "probe" / "best" / "model.safetensors");
  const uintmax_t budget = bytes_under(dir_ / "probe") + model / 2;
  {
    Child c(repair("run"), {"LD_PRELOAD=" HS_ENOSPC_SHIM, "HS_ENOSPC_DIR=" + path("run"),
                            "HS_ENOSPC_BYTES=" + std::to_string(budget)});
    ASSERT_EQ(c.wait(), 1) << c.err();
    EXPECT_EQ(c.err(), "headsurgeon: error: " + path("run") +
                           "/checkpoints/step-8/model.safetensors: write failed: No space left "
                           "on device\n");
  }
  EXPECT_FALSE(fs::exists(dir_ / "run" / "checkpoints" / "step-8"));
  EXPECT_FALSE(has_temporaries(dir_ / "run"));
  EXPECT_EQ(complete_checkpoints_load("run"), 2);  // step-4 and best
  EXPECT_EQ(nlohmann::json::parse(slurp(dir_ / "run" / "state" / "state.json"))["step"], 7);
  run_to_end("run", true);
  expect_same_run("ref", "run");
}

// Past a file-size limit (ulimit -f) the process is not killed by SIGXFSZ: one line names the
// file that hit it.
TEST_F(CrashRun, FileSizeLimitGivesOneLine) {
  // 1000 KiB: less than one checkpoint of tiny8.
  std::string script = "ulimit -f 1000\nexec '" + std::string(HS_BINARY) + "'";
  for (const std::string& a : repair("run")) script += " '" + a + "'";
  script += " 2>" + path("err.txt") + "\n";
  write("run.sh", script);
  const int st = std::system(("HEADSURGEON_DEVICE=cpu bash " + path("run.sh")).c_str());
  ASSERT_TRUE(WIFEXITED(st)) << "killed by signal " << WTERMSIG(st);
  EXPECT_EQ(WEXITSTATUS(st), 1);
  EXPECT_EQ(slurp(dir_ / "err.txt"), "headsurgeon: error: " + path("run") +
                                         "/checkpoints/step-4/model.safetensors: write failed: "
                                         "File too large\n");
  EXPECT_FALSE(has_temporaries(dir_ / "run"));
}

// SIGKILL at 20 or more moments drawn from a fixed seed (mid-step, mid-evaluation, mid-checkpoint
// and mid-state writes fall among them), --resume after each: every checkpoint that looks
// complete loads after every kill, and each run ends on the same bytes as an uninterrupted one.
TEST_F(CrashRun, KilledAtRandomMomentsResumesToTheSameWeights) {
  epochs_ = 4;  // 64 steps, 16 evaluations: about 3 s uninterrupted on one thread
  const auto t0 = Clock::now();
  run_to_end("ref");
  const double whole = Child::seconds(t0);
  // Kill moments from U(0, whole / 5): each life of a run gets a little further on average, and a
  // run killed until it finishes takes about seven kills; runs follow each other in fresh
  // folders until 20 kills have landed.
  std::mt19937 rng(2026);
  std::uniform_real_distribution<double> moment(0.0, whole / 5);
  int kills = 0, runs = 0;
  std::string steps;  // the saved step after each kill: where the kills fell
  while (kills < 20 && runs < 10 && !HasFailure()) {
    const std::string run = "run" + std::to_string(runs++);
    for (bool finished = false; !finished && !HasFailure();) {
      Child c(repair(run, true));
      const double at = moment(rng);
      const auto start = Clock::now();
      while (Child::seconds(start) < at && c.running())
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (c.running()) c.signal(SIGKILL);
      // The run may end between running() and the signal: a clean exit then counts as the end.
      const int code = c.wait();
      finished = code == 0;
      if (!finished) ++kills;
      EXPECT_TRUE(code == 0 || code == -1) << "exit " << code << ": " << c.err();
      complete_checkpoints_load(run);
      const auto state = dir_ / run / "state" / "state.json";
      steps += fs::exists(state) ? " " + nlohmann::json::parse(slurp(state))["step"].dump() : " -";
    }
    steps += " |";
    expect_same_run("ref", run);
  }
  std::fprintf(stderr,
               "[ measured ] %d kills over %d runs (uninterrupted: %.1f s); the saved step after "
               "each life:%s\n",
               kills, runs, whole, steps.c_str());
  EXPECT_GE(kills, 20);
}

}  // namespace
