// End-to-end surgery through the binary: plan, repair, checkpoints, resume, bad inputs.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "golden_data.h"
#include "io/safetensors.h"
#include "scratch_test.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

const std::string kTiny8 = std::string(HS_TEST_DATA) + "/golden/models/tiny8";

using hs::test::slurp;

class Repair : public hs::test::ScratchTest<> {
 protected:
  void SetUp() override {
    ScratchTest::SetUp();
    write("corpus.txt", hs::test::random_words(1500));
    write("plan.json", R"({"targets": {"0": [7], "2": [4, 6]}, "frozen_watch": {"2": [5]}})");
  }
  int run(const std::string& args, std::string* err = nullptr) {
    const std::string e = (dir_ / "stderr").string();
    const int st =
        std::system((std::string(HS_BINARY) + " " + args + " >/dev/null 2>" + e).c_str());
    if (err) *err = slurp(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  std::string repair_args(const std::string& out, int epochs = 3, const char* lr = "1e-2") {
    return "repair " + kTiny8 + " --plan " + (dir_ / "plan.json").string() + " --corpus " +
           (dir_ / "corpus.txt").string() + " -o " + (dir_ / out).string() +
           " --seq 32 --accum 4 --eval-every 1 --gen-tokens 4 -q --epochs " +
           std::to_string(epochs) + " --lr " + lr;
  }
};

TEST_F(Repair, TrainsOnlyTheTargetSlicesAndWritesLoadableCheckpoints) {
  std::string err;
  ASSERT_EQ(run(repair_args("run"), &err), 0) << err;
  const auto traj = nlohmann::json::parse(slurp(dir_ / "run/trajectory.json"));
  ASSERT_EQ(traj.size(), 3u);  // one evaluation per epoch
  EXPECT_LT(double(traj[2]["train_loss"]), double(traj[0]["train_loss"]));
  for (const char* k :
       {"epoch", "step", "train_ppl", "heldout_ppl", "heads_woken", "frozen_drift", "generations"})
    EXPECT_TRUE(traj[0].contains(k)) << k;
  for (const char* d : {"run/best", "run/final", "run/checkpoints/step-38"})
    EXPECT_TRUE(fs::exists(dir_ / d / "model.safetensors")) << d;

  // Byte-identical everywhere but the target slices; every target slice changed.
  hs::SafetensorsFile in(kTiny8 + "/model.safetensors");
  hs::SafetensorsFile out((dir_ / "run/final/model.safetensors").string());
  const int64_t d = 64, hd = 8;
  const std::map<int, std::vector<int>> targets = {{0, {7}}, {2, {4, 6}}};
  for (const auto& [name, a] : in.tensors()) {
    const hs::TensorView* b = out.find(name);
    ASSERT_TRUE(b) << name;
    ASSERT_EQ(a.nbytes, b->nbytes) << name;
    const auto* pa = reinterpret_cast<const float*>(a.data);
    const auto* pb = reinterpret_cast<const float*>(b->data);
    int layer = -1;
    std::sscanf(name.c_str(), "transformer.h.%d.", &layer);
    auto target_heads = targets.count(layer) ? targets.at(layer) : std::vector<int>{};
    auto in_slice = [&](int64_t i) {
      for (int h : target_heads) {
        if (name.ends_with("query_key_value.weight") && i / d >= h * 3 * hd &&
            i / d < (h + 1) * 3 * hd)
          return true;
        if (name.ends_with("query_key_value.bias") && i >= h * 3 * hd && i < (h + 1) * 3 * hd)
          return true;
        if (name.ends_with("self_attention.dense.weight") && i % d >= h * hd &&
            i % d < (h + 1) * hd)
          return true;
      }
      return false;
    };
    int64_t changed_in = 0, slice_n = 0;
    for (int64_t i = 0; i < a.numel(); ++i) {
      if (in_slice(i)) {
        ++slice_n;
        changed_in += pa[i] != pb[i];
      } else {
        ASSERT_EQ(std::memcmp(&pa[i], &pb[i], 4), 0) << name << " element " << i;
      }
    }
    if (slice_n > 0) {
      EXPECT_GT(changed_in, slice_n * 9 / 10) << name;
    }
  }
  // The checkpoint loads back and diagnoses.
  EXPECT_EQ(run("diagnose " + (dir_ / "run/final").string() + " -q"), 0);
}

TEST_F(Repair, InterruptAndResumeIsBitForBit) {
  std::string err;
  ASSERT_EQ(run(repair_args("a"), &err), 0) << err;
  EXPECT_EQ(run(repair_args("b") + " --interrupt-after-steps 17", &err), 130) << err;
  EXPECT_NE(err.find("--resume"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir_ / "b/final"));
  // Without --resume the run directory is protected.
  EXPECT_EQ(run(repair_args("b"), &err), 1);
  EXPECT_NE(err.find("--resume"), std::string::npos) << err;
  // Other settings cannot resume it.
  EXPECT_EQ(run(repair_args("b", 3, "2e-2") + " --resume", &err), 1);
  ASSERT_EQ(run(repair_args("b") + " --resume", &err), 0) << err;
  EXPECT_EQ(slurp(dir_ / "a/final/model.safetensors"), slurp(dir_ / "b/final/model.safetensors"));
  EXPECT_EQ(slurp(dir_ / "a/best/model.safetensors"), slurp(dir_ / "b/best/model.safetensors"));
}

// One checkpoint, one held-out PPL: the trajectory's figure is what `ppl --heldout=FILE` gives for
// the checkpoint, with <s> first when the plan's diagnosis read its prompts with it (as demo
// scores them) and without when not.
TEST_F(Repair, HeldoutPplFollowsThePlansBosAndMatchesThePplCommand) {
  write("heldout.txt", "the cat sat on a mat\n\ndogs ran far away from home\n");
  for (const bool bos : {true, false}) {
    write("plan.json", std::string(R"({"targets": {"0": [7], "2": [4, 6]}, "bos": )") +
                           (bos ? "true" : "false") + "}");
    const std::string out = bos ? "with_bos" : "without";
    std::string err;
    ASSERT_EQ(run(repair_args(out, 1) + " --heldout " + path("heldout.txt"), &err), 0) << err;
    const auto traj = nlohmann::json::parse(slurp(dir_ / out / "trajectory.json"));
    ASSERT_EQ(run("ppl " + path(out + "/best") + " --heldout=" + path("heldout.txt") +
                      (bos ? " --bos" : "") + " -q --json " + path(out + ".json"),
                  &err),
              0)
        << err;
    const auto ppl = nlohmann::json::parse(slurp(dir_ / (out + ".json")));
    ASSERT_EQ(ppl["per_sequence"].size(), 2u);
    EXPECT_EQ(ppl["per_sequence"][1]["source"], path("heldout.txt") + ":2");
    EXPECT_NEAR(double(traj.back()["heldout_ppl"]), double(ppl["ppl"]), 1e-9 * double(ppl["ppl"]))
        << (bos ? "with <s>" : "without <s>");
  }
}

TEST_F(Repair, NoReinitControlStartsFromTheStockHeads) {
  std::string err;
  ASSERT_EQ(run(repair_args("c", 1) + " --no-reinit", &err), 0) << err;
  ASSERT_EQ(run(repair_args("r", 1), &err), 0) << err;
  EXPECT_NE(slurp(dir_ / "c/final/model.safetensors"), slurp(dir_ / "r/final/model.safetensors"));
}

TEST_F(Repair, BadInputsGiveOneClearLine) {
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    std::string err;
    EXPECT_EQ(run(args, &err), 1) << args;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_NE(err.find(needle), std::string::npos) << needle << " in: " << err;
  };
  write("plan.json", R"({"targets": {"0": [8]}})");
  expect_error(repair_args("x"), "head 8 does not exist");
  write("plan.json", R"({"targets": {"3": [1]}})");
  expect_error(repair_args("x"), "layer '3' does not exist");
  write("plan.json", R"({"targets": {}})");
  expect_error(repair_args("x"), "no target heads");
  // A line break quoted from the plan stays out of the one-line message (found by fuzz_plan).
  write("plan.json", R"({"targets": {"0\n": [1]}})");
  expect_error(repair_args("x"), "layer '0?' does not exist");
  write("plan.json", R"({"targets": {"0": [1]}})");
  write("corpus.txt", "");
  expect_error(repair_args("x"), "empty");
  write("corpus.txt", "too short");
  expect_error(repair_args("x"), "fewer than one chunk");
  write("corpus.txt", std::string("bad \xff utf8", 10));
  expect_error(repair_args("x"), "invalid UTF-8");
}

// A damaged state.json on --resume (found by fuzz_state): a missing key failed an assertion
// (abort), a string where a count belongs threw the JSON library's error, 1e300 was cast to int.
TEST_F(Repair, DamagedStateOnResumeGivesOneClearLine) {
  ASSERT_EQ(run(repair_args("r", 1)), 0);
  const std::string state = (dir_ / "r/state/state.json").string();
  const auto good = nlohmann::json::parse(slurp(state));
  auto expect_error = [&](const nlohmann::json& j, const std::string& needle) {
    write("r/state/state.json", j.dump());
    std::string err;
    EXPECT_EQ(run(repair_args("r", 1) + " --resume", &err), 1) << j.dump();
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_NE(err.find(state), std::string::npos) << err;
    EXPECT_NE(err.find(needle), std::string::npos) << needle << " in: " << err;
  };
  expect_error({{"step", 1}}, "no \"options\" object");
  auto j = good;
  j["options"].erase("lr");
  expect_error(j, "option --lr was null");
  j = good;
  j["evals_since_best"] = 1e300;
  expect_error(j, "\"evals_since_best\" must be an integer");
  j = good;
  j["step"] = "3";
  expect_error(j, "\"step\" must be an integer");
  j = good;
  j["trajectory"] = 5;
  expect_error(j, "\"trajectory\" must be an array");
  j = good;
  j.erase("loss_sum");
  expect_error(j, "missing \"loss_sum\"");
}

TEST_F(Repair, NonFiniteLossStopsWithAClearError) {
  // ln_f.weight = NaN: the diagnosis (which never reaches ln_f) works, the training loss is NaN.
  const fs::path m = dir_ / "nan_model";
  hs::test::copy_model_edited(kTiny8, m, [](const std::string& name, std::vector<std::byte>& b) {
    const float nan = std::nanf("");
    if (name == "transformer.ln_f.weight")
      for (size_t i = 0; i < b.size(); i += 4) std::memcpy(b.data() + i, &nan, 4);
  });
  std::string err;
  const std::string args = "repair " + m.string() + " --plan " + (dir_ / "plan.json").string() +
                           " --corpus " + (dir_ / "corpus.txt").string() + " -o " +
                           (dir_ / "nan_run").string() + " --seq 32 --accum 4 -q";
  EXPECT_EQ(run(args, &err), 1);
  EXPECT_NE(err.find("loss became"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir_ / "nan_run/final"));
}

TEST_F(Repair, PlanFromADiagnosis) {
  // A random model has no collapsed heads: a low sink threshold makes some heads "sick".
  const std::string diag = (dir_ / "d.json").string(), plan = (dir_ / "p.json").string();
  ASSERT_EQ(run("diagnose " + kTiny8 + " -q --sink 0.04 --json " + diag), 0);
  std::string err;
  ASSERT_EQ(run("plan " + diag + " --all-sick -o " + plan, &err), 0) << err;
  const auto dj = nlohmann::json::parse(slurp(diag));
  const auto pj = nlohmann::json::parse(slurp(plan));
  int sick = 0;
  for (const auto& h : dj["heads_detail"]) sick += h["class"] != "healthy";
  ASSERT_GT(sick, 0);
  EXPECT_EQ(int(pj["target_count"]), sick);
  ASSERT_EQ(run("plan " + diag + " --band 5-7 --extra-columns 0 -o " + plan, &err), 0) << err;
  const auto pb = nlohmann::json::parse(slurp(plan));
  for (auto& [l, heads] : pb["targets"].items())
    for (int h : heads) EXPECT_TRUE(h == 0 || (h >= 5 && h <= 7)) << h;
  EXPECT_EQ(run("plan " + diag + " --band 9-3 -o " + plan, &err), 1);
  EXPECT_NE(err.find("--band"), std::string::npos);
}

// The paper's pass 2 on the model pass 1 produced: the band comes from pass 1's plan, found
// from the diagnosed checkpoint's run directory or given with --after.
TEST_F(Repair, Pass2PlansAroundTheBandOfPass1) {
  const fs::path d0 = dir_ / "d0.json", p1 = dir_ / "p1.json";
  ASSERT_EQ(run("diagnose " + kTiny8 + " -q --sink 0.04 --json " + d0.string()), 0);
  std::string err;
  ASSERT_EQ(run("plan " + d0.string() + " --band 5-7 -o " + p1.string(), &err), 0) << err;
  EXPECT_EQ(nlohmann::json::parse(slurp(p1))["band"], nlohmann::json({5, 7}));
  ASSERT_EQ(run("repair " + kTiny8 + " --plan " + p1.string() + " --corpus " +
                    (dir_ / "corpus.txt").string() + " -o " + (dir_ / "run1").string() +
                    " --seq 32 --accum 4 --epochs 1 --gen-tokens 4 -q --lr 1e-2",
                &err),
            0)
      << err;
  const std::string run_plan = (dir_ / "run1" / "plan.json").string();
  const int64_t step = nlohmann::json::parse(slurp(dir_ / "run1" / "trajectory.json"))[0]["step"];
  for (const fs::path& ckpt : {dir_ / "run1" / "best", dir_ / "run1" / "final",
                               dir_ / "run1" / "checkpoints" / ("step-" + std::to_string(step))}) {
    const fs::path d1 = dir_ / "d1.json", p2 = dir_ / "p2.json";
    ASSERT_EQ(run("diagnose " + ckpt.string() + " -q --sink 0.04 --json " + d1.string()), 0);
    const hs::test::Result r =
        hs::test::run_binary(dir_, "plan " + d1.string() + " --pass 2 -o " + p2.string());
    ASSERT_EQ(r.code, 0) << ckpt << ": " << r.err;
    EXPECT_NE(r.out.find("outside band H5-H7 (pass 2; the band of pass 1, from " + run_plan + ")"),
              std::string::npos)
        << r.out;
    // Every sick head outside the band, and nothing else.
    std::map<int, std::vector<int>> expected;
    const auto dj = nlohmann::json::parse(slurp(d1));
    for (const auto& h : dj["heads_detail"])
      if (h["class"] != "healthy" && (h["head"] < 5 || h["head"] > 7))
        expected[h["layer"]].push_back(h["head"]);
    const auto pj = nlohmann::json::parse(slurp(p2));
    std::map<int, std::vector<int>> got;
    for (auto& [l, heads] : pj["targets"].items())
      got[std::stoi(l)] = heads.get<std::vector<int>>();
    EXPECT_EQ(got, expected) << ckpt;
    EXPECT_EQ(pj["band"], nlohmann::json({5, 7}));
  }

  // Outside a run (a copied checkpoint), --after names pass 1's plan.
  fs::copy(dir_ / "run1" / "best", dir_ / "copy", fs::copy_options::recursive);
  const fs::path d2 = dir_ / "d2.json", p2 = dir_ / "p2.json";
  ASSERT_EQ(run("diagnose " + (dir_ / "copy").string() + " -q --sink 0.04 --json " + d2.string()),
            0);
  ASSERT_EQ(
      run("plan " + d2.string() + " --pass 2 --after " + p1.string() + " -o " + p2.string(), &err),
      0)
      << err;
  EXPECT_EQ(nlohmann::json::parse(slurp(p2))["band"], nlohmann::json({5, 7}));

  // Without a band or a pass-1 plan the error says which option to add; --after alone is not a
  // plan, and a plan without a band cannot give one.
  const fs::path healthy = dir_ / "healthy.json";
  ASSERT_EQ(run("diagnose " + kTiny8 + " -q --json " + healthy.string()), 0);
  auto one_line = [&](const std::string& args, std::initializer_list<std::string> needles) {
    EXPECT_EQ(run(args, &err), 1) << args;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    for (const auto& n : needles) EXPECT_NE(err.find(n), std::string::npos) << n << " in " << err;
  };
  one_line("plan " + healthy.string() + " --pass 2 -o " + p2.string(),
           {"no sick band", "add --after RUN/plan.json"});
  one_line("plan " + d2.string() + " --after " + p1.string() + " -o " + p2.string(),
           {"--after", "only with --pass 2"});
  one_line(
      "plan " + d2.string() + " --pass 2 --band 5-7 --after " + p1.string() + " -o " + p2.string(),
      {"--after", "--band"});
  one_line("plan " + d2.string() + " --pass 2 --after " + (dir_ / "plan.json").string() + " -o " +
               p2.string(),
           {(dir_ / "plan.json").string(), "records no band", "--band A-B"});
}

}  // namespace
