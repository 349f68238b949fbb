// A real (tiny) repair run directory of the golden model tiny8, for the tests that read runs
// (drift, report): a corpus of random words, a plan with three targets and one watched head.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "test_util.h"

namespace hs::test {

// Runs `repair` into dir/out (evaluating every epoch and every `eval_steps` steps) and returns
// its exit code; stderr goes to dir/repair.err.
inline int tiny_repair_run(const std::filesystem::path& dir, const std::string& out, int epochs,
                           int eval_steps) {
  std::ofstream(dir / "corpus.txt") << random_words(1500);
  std::ofstream(dir / "plan.json")
      << R"({"targets": {"0": [7], "2": [4, 6]}, "frozen_watch": {"2": [5]}})";
  const std::string cmd =
      std::string(HS_BINARY) + " repair " + HS_TEST_DATA + "/golden/models/tiny8 --plan " +
      (dir / "plan.json").string() + " --corpus " + (dir / "corpus.txt").string() + " -o " +
      (dir / out).string() + " --seq 32 --accum 4 --eval-every 1 --gen-tokens 4 -q --lr 1e-2" +
      " --epochs " + std::to_string(epochs) + " --eval-steps " + std::to_string(eval_steps) +
      " 2>" + (dir / "repair.err").string() + " >/dev/null";
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace hs::test
