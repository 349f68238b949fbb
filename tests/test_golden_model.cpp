// Forward pass, attention probabilities, loss and head statistics against the golden data
// (HF transformers in float64), for every directory in HEADSURGEON_GOLDEN_DIRS.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "diagnose/run.h"
#include "engine/cpu/forward.h"
#include "golden_data.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace hs {
namespace {

using test::floats;
using test::id_rows;
using test::rel_err;

class GoldenModel : public ::testing::TestWithParam<std::string> {
  void SetUp() override { test::use_golden_conventions(GetParam()); }
};

TEST_P(GoldenModel, LogitsAttentionLoss) {
  const std::string dir = GetParam();
  SafetensorsFile g(dir + "/golden.safetensors");
  Model model(dir);
  const auto ids = id_rows(g, "input_ids");
  ForwardOptions o;
  o.logits = o.probs = o.nll = true;
  const auto out = forward(model, ids, o);
  const int64_t B = int64_t(ids.size()), T = int64_t(ids[0].size()), V = model.config().vocab;
  const int64_t L = model.config().n_layer, H = model.config().n_head;

  const auto ref_logits = floats(g, "logits");
  ASSERT_EQ(ref_logits.size(), size_t(B * T * V));
  std::vector<float> ours;
  for (const auto& s : out) ours.insert(ours.end(), s.logits.begin(), s.logits.end());
  const double logits_err = rel_err(ours, ref_logits);
  EXPECT_LE(logits_err, 1e-4) << dir;
  std::printf("measured %s: logits max-abs-err/max-abs %.2e\n", dir.c_str(), logits_err);

  for (int64_t l = 0; l < L; ++l) {
    const auto ref = floats(g, "attn." + std::to_string(l));
    ASSERT_EQ(ref.size(), size_t(B * H * T * T));
    double worst = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < H * T * T; ++k)
        worst = std::max(worst, std::abs(double(out[b].probs[l][k]) - ref[b * H * T * T + k]));
    EXPECT_LE(worst, 1e-5) << dir << " layer " << l << " (max abs error of probabilities)";
    std::printf("measured %s: layer %lld attention max abs err %.2e\n", dir.c_str(), (long long)l,
                worst);
  }

  // HF's loss: mean over all B x (T-1) predicted tokens.
  double nll = 0;
  int64_t n = 0;
  for (const auto& s : out) nll += s.nll_sum, n += s.predicted;
  const double ref_loss = floats(g, "loss")[0];
  const double loss_err = std::abs(nll / double(n) - ref_loss) / std::abs(ref_loss);
  EXPECT_LE(loss_err, 1e-5) << dir;
  std::printf("measured %s: loss rel err %.2e\n", dir.c_str(), loss_err);
}

TEST_P(GoldenModel, DiagnosisMetrics) {
  const std::string dir = GetParam();
  SafetensorsFile g(dir + "/golden.safetensors");
  SafetensorsFile gx(dir + "/golden_extra.safetensors");
  nlohmann::json info = nlohmann::json::parse(std::ifstream(dir + "/golden.json"));
  Model model(dir);
  Tokenizer tok = Tokenizer::from_file(dir + "/tokenizer.json");
  const std::string prompt = info["diag_prompt"];
  // The golden ids come from HF's tokenizer: ours must produce the same ones.
  const auto ref_ids = id_rows(g, "diag.input_ids")[0];
  EXPECT_EQ(tok.encode(prompt), ref_ids);

  DiagnoseOptions opts;
  opts.prompts = {prompt};
  const Diagnosis d = diagnose(model, tok, opts, dir);
  const auto bos = floats(g, "diag.bos_mass"), ent = floats(g, "diag.entropy");
  const auto loc = floats(gx, "diag.local_mass");
  ASSERT_EQ(bos.size(), d.metrics.size());
  double worst = 0;
  for (size_t k = 0; k < d.metrics.size(); ++k) {
    worst = std::max({worst, std::abs(d.metrics[k].bos_mass - bos[k]),
                      std::abs(d.metrics[k].entropy - ent[k]),
                      std::abs(d.metrics[k].local_mass - loc[k])});
    EXPECT_NEAR(d.metrics[k].bos_mass, bos[k], 1e-5) << dir << " head " << k;
    EXPECT_NEAR(d.metrics[k].entropy, ent[k], 1e-5) << dir << " head " << k;
    EXPECT_NEAR(d.metrics[k].local_mass, loc[k], 1e-5) << dir << " head " << k;
  }
  std::printf("measured %s: head metrics max abs err %.2e\n", dir.c_str(), worst);
}

// Streaming (convert each layer when used) must compute exactly what the resident model does.
TEST_P(GoldenModel, StreamingEqualsResident) {
  const std::string dir = GetParam();
  SafetensorsFile g(dir + "/golden.safetensors");
  const auto ids = id_rows(g, "input_ids");
  Model resident(dir, ModelOptions{int64_t(1) << 40});
  Model streamed(dir, ModelOptions{0});
  ASSERT_TRUE(resident.resident());
  ASSERT_FALSE(streamed.resident());
  ForwardOptions o;
  o.head_stats = o.nll = true;
  const auto a = forward(resident, ids, o), b = forward(streamed, ids, o);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].bos_mass, b[i].bos_mass);
    EXPECT_EQ(a[i].nll_sum, b[i].nll_sum);
  }
}

// What bf16 weights cost against the golden data, measured on the CPU (so CI checks it): the
// GPU tests' bf16 tolerances (test::bf16_tolerance: 1e-2 of the logits' scale, 1e-3 absolute on
// the head metrics for BLOOM-initialised models) must hold with room to spare for rounding the
// matrices alone, since the GPU also rounds the GEMM inputs, an error of the same order.
TEST_P(GoldenModel, Bf16WeightsWithinGpuTolerance) {
  const std::string dir = GetParam();
  const std::filesystem::path copy =
      std::filesystem::temp_directory_path() / ("hs_bf16_" + std::to_string(::getpid()) + "_" +
                                                std::filesystem::path(dir).filename().string());
  // The matrices (what the GPU holds in bf16), whatever the family calls them.
  const Checkpoint ck(dir);
  std::set<std::string> matrices;
  for (const std::string& name : ck.tensor_names())
    if (ck.tensor(name).shape.size() == 2) matrices.insert(ck.tensor(name).name);
  test::copy_model_edited(dir, copy, [&](const std::string& name, std::vector<std::byte>& b) {
    if (matrices.count(name)) {
      float* f = reinterpret_cast<float*>(b.data());
      for (size_t i = 0; i < b.size() / 4; ++i) f[i] = bf16_to_f32(f32_to_bf16(f[i]));
    }
  });
  SafetensorsFile g(dir + "/golden.safetensors");
  SafetensorsFile gx(dir + "/golden_extra.safetensors");
  Model model(copy.string(), ModelOptions{int64_t(1) << 40});
  ForwardOptions o;
  o.logits = true;
  const auto out = forward(model, id_rows(g, "input_ids"), o);
  std::vector<float> ours;
  for (const auto& x : out) ours.insert(ours.end(), x.logits.begin(), x.logits.end());
  const double err = rel_err(ours, floats(g, "logits"));
  const test::Bf16Tolerance tol = test::bf16_tolerance(dir);
  EXPECT_LE(err, tol.logits / 2) << dir;

  nlohmann::json info = nlohmann::json::parse(std::ifstream(dir + "/golden.json"));
  Tokenizer tok = Tokenizer::from_file(dir + "/tokenizer.json");
  DiagnoseOptions opts;
  opts.prompts = {info["diag_prompt"].get<std::string>()};
  const Diagnosis d = diagnose(model, tok, opts, dir);
  const auto bos = floats(g, "diag.bos_mass"), ent = floats(g, "diag.entropy");
  const auto loc = floats(gx, "diag.local_mass");
  double worst = 0;
  for (size_t k = 0; k < d.metrics.size(); ++k)
    worst = std::max({worst, std::abs(d.metrics[k].bos_mass - bos[k]),
                      std::abs(d.metrics[k].entropy - ent[k]),
                      std::abs(d.metrics[k].local_mass - loc[k])});
  EXPECT_LE(worst, tol.metrics / 2) << dir;
  std::printf("measured %s with bf16 matrices: logits %.2e, head metrics %.2e\n", dir.c_str(), err,
              worst);
  std::filesystem::remove_all(copy);
}

INSTANTIATE_TEST_SUITE_P(Dirs, GoldenModel, ::testing::ValuesIn(test::golden_model_dirs()),
                         test::DirName());

}  // namespace
}  // namespace hs
