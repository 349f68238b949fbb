// Surgery on the GPU (engine/cuda/surgery.cu) against the golden data and the CPU: the 3-step
// surgical run of every golden directory with fp32 weights, the CPU's surgery on a random model of
// every family, a 40-step bf16 run on the demo model, and resume bit for bit. Skipped, saying
// why, where no usable GPU is present (CI).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "backend/backend.h"
#include "cuda/runtime.h"
#include "engine/cpu/train.h"
#include "golden_data.h"
#include "golden_surgery.h"
#include "random_family_model.h"
#include "surgery/schedule.h"
#include "test_util.h"
#include "text/corpus.h"
#include "text/tokenizer.h"

namespace hs {
namespace {

using test::floats;
using test::id_rows;
using test::rel_err;

// max |a - b| / max |b| over every buffer of two slice sets. Without clip_qkv the key rows of a
// qkv bias are left out: their gradient is exactly 0 (a key bias adds the same q . b_k to every
// score of a row, which the softmax ignores), so each device trains them on its own fp32 noise
// (~1e-9), which Adam, normalising by the gradient's own size, turns into steps of up to lr.
double slices_err(const TargetSlices& a, const TargetSlices& b, bool key_bias) {
  double num = 0, den = 0;
  const auto x = a.buffers(), y = b.buffers();
  const bool bias = !b.qkv_bias.empty() && !b.qkv_bias[0].empty();
  const size_t per_target = bias ? 3 : 2, hd = size_t(b.head_dim);
  for (size_t k = 0; k < x.size(); ++k)
    for (size_t i = 0; i < x[k]->size(); ++i) {
      if (!key_bias && bias && k % per_target == 1 && i >= hd && i < 2 * hd) continue;
      num = std::max(num, std::abs(double((*x[k])[i]) - (*y[k])[i]));
      den = std::max(den, std::abs(double((*y[k])[i])));
    }
  return den > 0 ? num / den : num;
}

class GpuSurgeryGolden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string why = cuda::unusable_reason();
    if (!why.empty()) GTEST_SKIP() << why;
    test::use_golden_conventions(GetParam());
  }
};

// The golden 3-step surgical run with fp32 weights on the GPU (tests/golden_surgery.h): losses
// and pre-clip gradient norms within 1e-4 relative, the final slices within 1e-4 of their scale.
TEST_P(GpuSurgeryGolden, ThreeStepSurgicalRun) {
  test::check_golden_surgery(GetParam(), DeviceKind::cuda, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Dirs, GpuSurgeryGolden, ::testing::ValuesIn(test::golden_model_dirs()),
                         test::DirName());

class GpuSurgery : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = cuda::unusable_reason();
    if (!why.empty()) GTEST_SKIP() << why;
  }
};

// Five steps of the CPU's and the GPU's surgery (fp32 weights) on random models of every family
// (MPT with clip_qkv and biases: its clamp backward and permuted layout; Falcon untied; BLOOM
// post-LN), targets in two layers: losses, norms and final slices within 1e-4.
TEST_F(GpuSurgery, MatchesTheCpuOnEveryFamily) {
  std::vector<test::FamilySpec> specs(3);
  specs[0] = {"mpt", 48, 6, 3, 97};
  specs[0].clip_qkv = 1.0, specs[0].logit_scale = 0.5;
  specs[1] = {"falcon", 48, 12, 3, 90};
  specs[1].tied = false;
  specs[2] = {"bloom", 48, 6, 3, 300};
  specs[2].post_ln = true;
  for (const auto& spec : specs) {
    SCOPED_TRACE(spec.family);
    const std::string dir = (std::filesystem::temp_directory_path() /
                             ("hs_gpu_surgery_" + std::to_string(::getpid()) + spec.family))
                                .string();
    test::write_random_family_model(dir, spec, 77);
    Model model(dir, ModelOptions{int64_t(1) << 40});
    const std::vector<HeadRef> targets = {{1, 2}, {1, 5}, {2, 0}};
    const AdamWConfig adam{1e-2, 0.9, 0.999, 1e-8, 0.0};
    auto cpu = make_surgery(model, DeviceKind::cpu, "auto", targets, adam, 1);
    auto gpu = make_surgery(model, DeviceKind::cuda, "f32", targets, adam, 1);
    std::mt19937 rng(5);
    for (int step = 0; step < 5; ++step) {
      std::vector<std::vector<int32_t>> seqs(3, std::vector<int32_t>(20 + step));
      for (auto& s : seqs)
        for (auto& x : s) x = int32_t(rng() % uint32_t(spec.V));
      std::vector<const std::vector<int32_t>*> batch;
      for (auto& s : seqs) batch.push_back(&s);
      const double a = cpu->accumulate(batch, 0.01), b = gpu->accumulate(batch, 0.01);
      EXPECT_NEAR(b, a, 1e-4 * std::abs(a)) << "loss, step " << step;
      const double na = cpu->step(1e-2, 1.0), nb = gpu->step(1e-2, 1.0);
      EXPECT_NEAR(nb, na, 1e-4 * na) << "norm, step " << step;
    }
    EXPECT_LE(slices_err(gpu->masters(), cpu->masters(), model.config().clip_qkv > 0), 1e-4);
    // The engines read the trained slices: the same logits on both devices.
    ForwardOptions o;
    o.logits = true;
    const std::vector<std::vector<int32_t>> probe = {{1, 5, 9, 2, 7}};
    EXPECT_LE(rel_err(gpu->engine().forward(probe, o)[0].logits,
                      cpu->engine().forward(probe, o)[0].logits),
              1e-4);
    std::filesystem::remove_all(dir);
  }
}

// bf16 weights on the demo model: 40 steps of 8 x 128 tokens track the CPU's fp32 run, the loss
// within 2 % at every step (the check).
TEST_F(GpuSurgery, DemoModelFortyStepsTrackTheCpu) {
  // The demo model (HEADSURGEON_DEMO_DIR where the tree moved, as on the GPU machine).
  const char* env = std::getenv("HEADSURGEON_DEMO_DIR");
  const std::string dir = env && *env ? env : std::string(HS_TEST_DATA) + "/../../models/demo";
  Model model(dir, ModelOptions{int64_t(1) << 40});
  const Tokenizer tok = Tokenizer::from_file(dir + "/tokenizer.json");
  std::vector<int32_t> stream;
  tokenize_corpus(
      {dir + "/corpus"}, tok, model.config().eos_id, CorpusOptions{},
      [&](std::span<const int32_t> ids) { stream.insert(stream.end(), ids.begin(), ids.end()); });
  const Chunks view(stream, 128, dir);
  ASSERT_GE(view.size(), 320u);
  std::vector<std::vector<int32_t>> chunks;
  for (size_t i = 0; i < view.size(); ++i) chunks.push_back(view.copy(i));
  std::vector<HeadRef> targets;
  for (int l = 1; l <= 4; ++l)
    for (int h = 9; h <= 15; ++h) targets.push_back({l, h});
  const AdamWConfig adam{1e-3, 0.9, 0.999, 1e-8, 0.0};
  auto cpu = make_surgery(model, DeviceKind::cpu, "auto", targets, adam, 2);
  auto gpu = make_surgery(model, DeviceKind::cuda, "bf16", targets, adam, 1);
  TargetSlices init = cpu->masters();
  reinitialize(init, InitKind::XavierNormal, 0);
  cpu->set(init, AdamState{});
  gpu->set(init, AdamState{});
  double worst = 0;
  for (int step = 0; step < 40; ++step) {
    std::vector<const std::vector<int32_t>*> batch;
    for (int i = 0; i < 8; ++i) batch.push_back(&chunks[step * 8 + i]);
    const double w = 1.0 / (8 * 127);
    const double a = cpu->accumulate(batch, w), b = gpu->accumulate(batch, w);
    worst = std::max(worst, std::abs(b - a) / a);
    EXPECT_NEAR(b, a, 0.02 * a) << "step " << step;
    const double lr = 1e-3 * lr_factor(step, 10, 40);
    cpu->step(lr, 1.0);
    gpu->step(lr, 1.0);
  }
  std::printf("measured: demo model, bf16 GPU vs fp32 CPU, worst step loss rel diff %.2e\n", worst);
}

// Stopping after two steps and setting the saved masters and moments into a fresh surgery ends
// bit for bit where an uninterrupted run ends (what --resume relies on).
TEST_F(GpuSurgery, ResumeIsBitForBit) {
  const std::string dir = test::golden_model_dirs().front();
  Model model(dir, ModelOptions{int64_t(1) << 40});
  const std::vector<HeadRef> targets = {{0, 7}, {2, 4}, {2, 6}};
  const AdamWConfig adam{1e-2, 0.9, 0.999, 1e-8, 0.0};
  std::mt19937 rng(3);
  std::vector<std::vector<int32_t>> seqs(4, std::vector<int32_t>(32));
  for (auto& s : seqs)
    for (auto& x : s) x = int32_t(rng() % uint32_t(model.config().vocab));
  auto run = [&](Surgery& s, int from, int to) {
    for (int k = from; k < to; ++k) {
      s.accumulate({&seqs[k], &seqs[(k + 1) % 4]}, 0.01);
      s.step(1e-2, 1.0);
    }
  };
  auto a = make_surgery(model, DeviceKind::cuda, "bf16", targets, adam, 1);
  run(*a, 0, 4);
  auto b = make_surgery(model, DeviceKind::cuda, "bf16", targets, adam, 1);
  run(*b, 0, 2);
  const TargetSlices mid = b->masters();
  const AdamState st = b->adam();
  auto c = make_surgery(model, DeviceKind::cuda, "bf16", targets, adam, 1);
  c->set(mid, st);
  run(*c, 2, 4);
  const auto x = a->masters().buffers(), y = c->masters().buffers();
  for (size_t k = 0; k < x.size(); ++k) EXPECT_EQ(*x[k], *y[k]) << "slice buffer " << k;
}

}  // namespace
}  // namespace hs
