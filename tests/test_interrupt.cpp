// Ctrl-C and SIGTERM through the binary (issue 18): a repair whose steps take seconds stops within
// a layer, saves the state of its last completed step and resumes to the same weights; the long
// analysis commands, pretrain and the demo stop within a second; a second signal says what is
// being finished, a third exits at once. Every command here runs on the demo model.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "io/safetensors.h"
#include "scratch_test.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using hs::test::slurp;

const fs::path kDemo = fs::path(HS_TEST_DATA).parent_path().parent_path() / "models" / "demo";

// Signal to exit, in seconds, that the tests allow: the promise is "within a second"; the margin
// is for a loaded two-core machine.
constexpr double kLimit = 2.0;

using hs::test::Child;

// Sends `sig` and returns the seconds until the process has exited with `code`.
double stop(Child& c, int sig, int code = 130) {
  const auto t0 = Clock::now();
  c.signal(sig);
  EXPECT_EQ(c.wait(), code) << c.err();
  const double s = Child::seconds(t0);
  std::fprintf(stderr, "[ measured ] exit %.3f s after the signal\n", s);
  return s;
}

class Interrupt : public hs::test::ScratchTest<> {
 protected:
  // The demo corpus concatenated `copies` times: a long text.
  std::string long_text(int copies) const {
    std::string one;
    for (const auto& e : fs::directory_iterator(kDemo / "corpus")) one += slurp(e.path());
    std::string all;
    for (int i = 0; i < copies; ++i) all += one;
    return all;
  }
  // A repair on the demo model whose steps take seconds: sequences of 2048 tokens (a few seconds
  // each on one thread), one per step, two steps.
  std::vector<std::string> repair(const std::string& out) const {
    return {"repair",       kDemo.string(),
            "--plan",       path("plan.json"),
            "--corpus",     path("corpus.txt"),
            "-o",           path(out),
            "--seq",        "2048",
            "--accum",      "1",
            "--epochs",     "1",
            "--gen-tokens", "1"};
  }
  void prepare_repair() const {
    write("plan.json", R"({"targets": {"1": [10, 11], "3": [12]}, "frozen_watch": {"3": [10]}})");
    // Two sequences of 2048 tokens (and a part of a third, unused).
    write("corpus.txt", slurp(kDemo / "corpus" / "gzip.py").substr(0, 17000));
  }
  nlohmann::json state(const std::string& run) const {
    return nlohmann::json::parse(slurp(dir_ / run / "state" / "state.json"));
  }
};

// The issue's "done when": SIGINT in the middle of step 2 (of 2): exit 130 within the limit, the
// state of step 1 saved, and --resume ends on the same bytes as an uninterrupted run (here after
// a second interruption, in the final evaluation).
TEST_F(Interrupt, RepairStopsInsideAStepAndResumesBitForBit) {
  prepare_repair();
  {
    Child ref(repair("ref"));
    ASSERT_EQ(ref.wait(), 0) << ref.err();
    ASSERT_NE(ref.err().find("2 steps"), std::string::npos) << ref.err();
  }
  Child c(repair("run"));
  ASSERT_TRUE(c.wait_for("step 1/2")) << c.err();
  const auto step2 = Clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // inside step 2's sequence
  EXPECT_LT(stop(c, SIGINT), kLimit);
  std::fprintf(stderr, "[ measured ] step 2 abandoned %.3f s after it began\n",
               Child::seconds(step2));
  EXPECT_NE(c.err().find("interrupted: state saved at step 1; continue with --resume"),
            std::string::npos)
      << c.err();
  EXPECT_EQ(state("run")["step"], 1);
  EXPECT_FALSE(fs::exists(dir_ / "run" / "final"));

  // Resumed, and interrupted again in the evaluation after the last step: that evaluation is
  // what the next --resume does.
  auto args = repair("run");
  args.push_back("--resume");
  {
    Child r(args);
    ASSERT_TRUE(r.wait_for("step 2/2")) << r.err();
    EXPECT_NE(r.err().find("resuming at step 1"), std::string::npos) << r.err();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    EXPECT_LT(stop(r, SIGINT), kLimit);
    EXPECT_NE(r.err().find("interrupted: state saved at step 2"), std::string::npos) << r.err();
  }
  EXPECT_EQ(state("run")["eval_pending"], true);
  Child r(args);
  ASSERT_EQ(r.wait(), 0) << r.err();
  EXPECT_EQ(slurp(dir_ / "ref/final/model.safetensors"),
            slurp(dir_ / "run/final/model.safetensors"));
  EXPECT_EQ(slurp(dir_ / "ref/best/model.safetensors"), slurp(dir_ / "run/best/model.safetensors"));
  auto trajectory = [&](const std::string& run) {
    auto t = nlohmann::json::parse(slurp(dir_ / run / "trajectory.json"));
    for (auto& e : t) {
      e.erase("seconds");
      e.erase("eval_seconds");
    }
    return t;
  };
  EXPECT_EQ(trajectory("ref"), trajectory("run"));
}

// SIGTERM (timeout, job schedulers) is Ctrl-C; a second signal says the run is stopping or
// finishing its save, the state stays resumable; a third exits at once and leaves the saved state
// whole.
TEST_F(Interrupt, RepairSigtermAndRepeatedSignals) {
  prepare_repair();
  {
    Child c(repair("run"));
    ASSERT_TRUE(c.wait_for("repair: ")) << c.err();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_LT(stop(c, SIGTERM), kLimit);
    EXPECT_NE(c.err().find("interrupted: state saved at step 0"), std::string::npos) << c.err();
  }
  EXPECT_EQ(state("run")["step"], 0);
  auto args = repair("run");
  args.push_back("--resume");
  {
    Child c(args);
    ASSERT_TRUE(c.wait_for("resuming at step 0")) << c.err();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    c.signal(SIGINT);  // two kinds: signals of one kind do not queue
    EXPECT_LT(stop(c, SIGTERM), kLimit);
    EXPECT_TRUE(c.err().find("stopping") != std::string::npos ||
                c.err().find("finishing the save") != std::string::npos)
        << c.err();
    EXPECT_NE(c.err().find("interrupted: state saved at step 0"), std::string::npos) << c.err();
  }
  EXPECT_EQ(state("run")["step"], 0);
  {
    Child c(args);
    ASSERT_TRUE(c.wait_for("resuming at step 0")) << c.err();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    // Held while the first two arrive, so that the third may find it still saving; the save
    // takes milliseconds, so it often ends first (the unit test checks the third signal itself).
    c.signal(SIGSTOP);
    c.signal(SIGINT);
    c.signal(SIGTERM);
    c.signal(SIGCONT);
    EXPECT_LT(stop(c, SIGINT), kLimit);
    const bool at_once = c.err().find("exiting at once") != std::string::npos;
    std::fprintf(stderr, "[ measured ] the third signal came %s\n",
                 at_once ? "during the stop: exited at once" : "after the save");
    if (!at_once) {
      EXPECT_NE(c.err().find("interrupted: state saved at step 0"), std::string::npos) << c.err();
    }
  }
  // Whatever the third signal cut short, a whole state is there.
  EXPECT_EQ(state("run")["step"], 0);
  hs::SafetensorsFile f((dir_ / "run/state/state.safetensors").string());
  EXPECT_TRUE(f.find("adam_v.0"));
}

// Ctrl-C while repair tokenizes its corpus, inside its one long document (40 MB of words that
// rarely repeat: seconds on one thread): exit 130 within the limit, before the tokenizing ends,
// and no token cache, whole or partial, left in the run directory.
TEST_F(Interrupt, RepairStopsWhileTokenizing) {
  write("plan.json", R"({"targets": {"1": [10, 11]}})");
  const char* pieces[] = {"self", "def", "ret", "urn", "imp", "ort",  "_",  "ing",
                          "str",  "val", "ue",  "pos", "ix",  "name", "lo", "ka"};
  std::mt19937 rng(5);
  std::string text;
  text.reserve(41 << 20);
  while (text.size() < (40 << 20)) {
    for (int k = 3 + int(rng() % 5); k > 0; --k) text += pieces[rng() % 16];
    text += rng() % 16 == 0 ? '\n' : ' ';
  }
  write("big.txt", text);
  Child c({"repair", kDemo.string(), "--plan", path("plan.json"), "--corpus", path("big.txt"), "-o",
           path("run"), "--threads", "1"});
  ASSERT_TRUE(c.wait_for("corpus: tokenizing")) << c.err();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_LT(stop(c, SIGINT), kLimit);
  EXPECT_EQ(c.err().find("corpus: 1 document,"), std::string::npos) << "tokenizing ended first";
  EXPECT_NE(c.err().find("headsurgeon: interrupted"), std::string::npos) << c.err();
  EXPECT_TRUE(fs::is_empty(dir_ / "run"));
}

// The long analysis commands, pretrain and the demo: each started on work that takes far longer
// than the test, SIGINT after a second, exit 130 within the limit.
TEST_F(Interrupt, LongCommandsStopWithinASecond) {
  write("long.txt", long_text(2));
  write("prompt.txt", slurp(kDemo / "corpus" / "calendar.py"));
  const std::string model = kDemo.string();
  const std::vector<std::vector<std::string>> commands = {
      {"diagnose", model, "--prompt-file", path("prompt.txt"), "--prompt-file", path("prompt.txt"),
       "--prompt-file", path("prompt.txt")},
      {"ppl", model, "--text", path("long.txt"), "--max-length", "1024"},
      {"generate", model, "--prompt", "def main():", "--max-new-tokens", "20000", "--ignore-eos"},
      {"ablate", model, "--text", path("long.txt")},
      {"drift", model, model, "--prompt-file", path("prompt.txt")},
      {"pretrain", "--corpus", (kDemo / "corpus").string(), "--tokenizer",
       (kDemo / "tokenizer.json").string(), "-o", path("pretrained"), "--steps", "100000"},
      {"demo", "-o", path("demo"), "--epochs", "50"},
  };
  for (const auto& args : commands) {
    SCOPED_TRACE(args[0]);
    Child c(args);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    EXPECT_LT(stop(c, SIGINT), kLimit) << args[0];
    EXPECT_NE(c.err().find("interrupted"), std::string::npos) << c.err();
  }
}

}  // namespace
