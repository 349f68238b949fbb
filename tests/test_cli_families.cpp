// Every command on an MPT and a Falcon-RW checkpoint, as a user runs them: diagnose, plan,
// repair (surgery in the family's own qkv layout, no bias rows where there are none; the
// checkpoints it writes keep every other byte), drift, ppl, generate, dormancy, ablate, report.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "io/safetensors.h"
#include "scratch_test.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using hs::test::Result;
using nlohmann::json;

struct FamilyCase {
  const char* name;
  const char* dir;       // under tests/data/golden/models
  const char* qkv;       // the fused qkv weight's name in layer L ("{}" = L)
  const char* qkv_bias;  // "" when the family has none here
  const char* out_proj;  // the output projection's weight
  bool blocked;          // MPT's [Q|K|V] rows
};

void PrintTo(const FamilyCase& c, std::ostream* os) { *os << c.name; }

const FamilyCase kCases[] = {
    {"mpt", "mpt8", "transformer.blocks.{}.attn.Wqkv.weight", "",
     "transformer.blocks.{}.attn.out_proj.weight", true},
    {"falcon", "falconrw8", "transformer.h.{}.self_attention.query_key_value.weight",
     "transformer.h.{}.self_attention.query_key_value.bias",
     "transformer.h.{}.self_attention.dense.weight", false}};

std::string at_layer(std::string pattern, int l) {
  if (pattern.empty()) return pattern;
  return pattern.replace(pattern.find("{}"), 2, std::to_string(l));
}

class CliFamily : public hs::test::ScratchTest<::testing::TestWithParam<FamilyCase>> {
 protected:
  void SetUp() override {
    ScratchTest::SetUp();
    model_ = std::string(HS_TEST_DATA) + "/golden/models/" + GetParam().dir;
  }
  std::string model_;
};

TEST_P(CliFamily, EveryCommand) {
  const FamilyCase& fc = GetParam();
  // diagnose: every head, the family named in the JSON's slopes (ALiBi of 8 heads).
  Result r = run("diagnose " + model_ + " -q --json " + (dir_ / "d.json").string());
  ASSERT_EQ(r.code, 0) << r.err;
  const json d = json::parse(hs::test::slurp(dir_ / "d.json"));
  EXPECT_EQ(d["layers"], 3);
  EXPECT_EQ(d["heads"], 8);
  EXPECT_EQ(d["heads_detail"].size(), 24u);
  EXPECT_EQ(d["family"], fc.name);
  EXPECT_FLOAT_EQ(d["heads_detail"][0]["slope"].get<float>(), 0.5f);

  // plan from the diagnosis (every sick head, or a hand-written plan when none is sick).
  r = run("plan " + (dir_ / "d.json").string() + " --all-sick -o " + (dir_ / "p.json").string());
  EXPECT_TRUE(r.code == 0 || r.err.find("no sick") != std::string::npos ||
              r.err.find("nothing") != std::string::npos)
      << r.err;

  // repair on a hand-written plan: heads 7 of layer 0, 4 and 6 of layer 2.
  std::mt19937 rng(1);
  const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "while", "dogs", "ran", "far"};
  std::string text;
  for (int i = 0; i < 800; ++i) text += std::string(words[rng() % 10]) + " ";
  write("corpus.txt", text);
  write("plan.json", R"({"targets": {"0": [7], "2": [4, 6]}, "frozen_watch": {"2": [5]}})");
  const std::string repair = "repair " + model_ + " --plan " + (dir_ / "plan.json").string() +
                             " --corpus " + (dir_ / "corpus.txt").string() +
                             " --seq 32 --accum 4 --eval-every 1 --gen-tokens 4 -q --epochs 2 "
                             "--lr 1e-2 -o ";
  r = run(repair + (dir_ / "run").string());
  ASSERT_EQ(r.code, 0) << r.err;
  const json traj = json::parse(hs::test::slurp(dir_ / "run/trajectory.json"));
  ASSERT_EQ(traj.size(), 2u);
  EXPECT_TRUE(std::isfinite(double(traj[1]["heldout_ppl"])));

  // The final checkpoint: the family's names and dtypes, every byte outside the target heads'
  // rows (in the family's own layout) and output columns identical to the input.
  hs::SafetensorsFile in(model_ + "/model.safetensors");
  hs::SafetensorsFile out((dir_ / "run/final/model.safetensors").string());
  ASSERT_EQ(in.tensors().size(), out.tensors().size());
  const int64_t dm = 64, hd = 8, H = 8;
  const std::map<int, std::vector<int>> targets = {{0, {7}}, {2, {4, 6}}};
  auto head_rows = [&](int h) {
    std::set<int64_t> rows;
    for (int64_t p = 0; p < 3; ++p)
      for (int64_t i = 0; i < hd; ++i)
        rows.insert(fc.blocked ? p * H * hd + h * hd + i : (3 * h + p) * hd + i);
    return rows;
  };
  for (const auto& [name, a] : in.tensors()) {
    const hs::TensorView* b = out.find(name);
    ASSERT_TRUE(b) << name;
    EXPECT_EQ(b->dtype, a.dtype) << name;
    ASSERT_EQ(a.nbytes, b->nbytes) << name;
    const auto* pa = reinterpret_cast<const float*>(a.data);
    const auto* pb = reinterpret_cast<const float*>(b->data);
    std::set<int64_t> moving_rows, moving_cols;
    bool bias = false;
    for (const auto& [l, heads] : targets)
      for (int h : heads) {
        if (name == at_layer(fc.qkv, l) || name == at_layer(fc.qkv_bias, l))
          for (int64_t row : head_rows(h)) moving_rows.insert(row);
        if (name == at_layer(fc.qkv_bias, l)) bias = true;
        if (name == at_layer(fc.out_proj, l))
          for (int64_t c = h * hd; c < (h + 1) * hd; ++c) moving_cols.insert(c);
      }
    const int64_t cols = bias || a.shape.size() == 1 ? 1 : a.shape[1];
    int64_t changed = 0, slice = 0;
    for (int64_t i = 0; i < a.numel(); ++i) {
      const bool in_slice =
          moving_rows.count(i / cols) || (!moving_cols.empty() && moving_cols.count(i % dm));
      if (in_slice) {
        ++slice;
        changed += pa[i] != pb[i];
      } else {
        ASSERT_EQ(std::memcmp(&pa[i], &pb[i], 4), 0) << name << " element " << i;
      }
    }
    if (slice > 0 && !bias) {
      EXPECT_GT(changed, slice * 9 / 10) << name;
    }
  }
  const json cfg = json::parse(hs::test::slurp(dir_ / "run/final/config.json"));
  EXPECT_EQ(cfg["model_type"], fc.name);

  // The repaired model loads back in every command.
  const std::string fin = (dir_ / "run/final").string();
  r = run("drift " + model_ + " " + fin + " --plan " + (dir_ / "plan.json").string() + " --json " +
          (dir_ / "drift.json").string() + " -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const json drift = json::parse(hs::test::slurp(dir_ / "drift.json"));
  EXPECT_TRUE(drift.contains("targets")) << drift.dump();
  r = run("ppl " + fin + " --heldout --json -");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_GT(double(json::parse(r.out)["ppl"]), 1.0);
  r = run("generate " + fin + " --prompt 'The container holds' --temperature 0 --max-new-tokens 5");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
  r = run("dormancy " + fin + " --json -");
  ASSERT_EQ(r.code, 0) << r.err;
  r = run("ablate " + fin + " --json - -q");
  ASSERT_EQ(r.code, 0) << r.err;
  r = run("report " + (dir_ / "run").string() + " -o " + (dir_ / "report.html").string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_GT(fs::file_size(dir_ / "report.html"), 1000u);
}

INSTANTIATE_TEST_SUITE_P(Families, CliFamily, ::testing::ValuesIn(kCases),
                         [](const auto& p) { return std::string(p.param.name); });

}  // namespace
