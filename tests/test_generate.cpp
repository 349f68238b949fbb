// The KV-cache decoder and generation against the full forward pass and the golden data (HF
// transformers' greedy generate), on every golden model and on a random model with shapes the
// golden data lacks (6 heads, the post-LayerNorm residual variant).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "engine/cpu/decoder.h"
#include "engine/cpu/forward.h"
#include "eval/generate.h"
#include "golden_data.h"
#include "io/safetensors.h"
#include "random_bloom.h"
#include "test_util.h"

namespace hs {
namespace {

namespace fs = std::filesystem;

// KV-cache logits against the full forward pass: max |difference| / max |logit| per step.
constexpr double kLogitTol = 1e-5;

// Golden models and the random one.
std::vector<std::string> model_dirs() {
  auto dirs = test::golden_model_dirs();
  dirs.push_back("random:post_ln_6_heads");
  return dirs;
}

std::unique_ptr<Model> open(const std::string& spec) {
  if (spec.rfind("random:", 0) != 0) return std::make_unique<Model>(spec);
  const std::string dir = test::write_random_bloom("hs_gen", 48, 6, 3, 300, true);
  auto m = std::make_unique<Model>(dir, ModelOptions{int64_t(1) << 40});
  fs::remove_all(dir);  // the weights are in memory now
  return m;
}

std::vector<int32_t> random_ids(std::mt19937& rng, int64_t n, int64_t V) {
  std::vector<int32_t> ids(n);
  for (auto& v : ids) v = int32_t(rng() % uint32_t(V));
  return ids;
}

double step_err(const float* got, const float* want, int64_t V) {
  return test::rel_err(std::vector<float>(got, got + V), std::vector<float>(want, want + V));
}

class Generate : public ::testing::TestWithParam<std::string> {
  void SetUp() override { test::use_golden_conventions(GetParam()); }
};

// Every position's logits from the cache equal the full forward pass's, whether the tokens come
// one at a time, as a prefill, or in chunks after a prefill.
TEST_P(Generate, KvCacheLogitsEqualFullForward) {
  auto model = open(GetParam());
  const int64_t V = model->config().vocab, T = 40;
  std::mt19937 rng(7);
  const auto ids = random_ids(rng, T, V);
  ForwardOptions o;
  o.logits = true;
  const auto full = forward(*model, {ids}, o)[0].logits;

  double worst = 0;
  // Schedules: feed sizes until T tokens are in.
  for (const std::vector<int64_t>& sizes :
       {std::vector<int64_t>(T, 1), std::vector<int64_t>{12, 5, 1, 1, 9, 1, 11},
        std::vector<int64_t>{T}}) {
    Decoder dec(*model, 1, T);
    int64_t pos = 0;
    for (int64_t n : sizes) {
      const Decoder::Feed f{0, std::span(ids).subspan(pos, n)};
      const auto& logits = dec.extend({&f, 1});
      pos += n;
      ASSERT_EQ(dec.length(0), pos);
      const double e = step_err(logits.data(), full.data() + (pos - 1) * V, V);
      worst = std::max(worst, e);
      EXPECT_LE(e, kLogitTol) << GetParam() << " position " << pos - 1;
    }
  }
  std::printf("measured %s: KV-cache logits max-abs-err/max-abs over 40 positions %.2e\n",
              GetParam().c_str(), worst);
}

// Several sequences in one pass (forked prompt, different continuations) each match their own
// full forward pass.
TEST_P(Generate, BatchedSequencesEqualFullForward) {
  auto model = open(GetParam());
  const int64_t V = model->config().vocab;
  std::mt19937 rng(11);
  const auto prompt = random_ids(rng, 9, V);
  std::vector<std::vector<int32_t>> seqs(3, prompt);
  Decoder dec(*model, 3, 20);
  const Decoder::Feed pre{0, prompt};
  dec.extend({&pre, 1});
  dec.fork(0, 1);
  dec.fork(0, 2);
  ForwardOptions o;
  o.logits = true;
  double worst = 0;
  for (int step = 0; step < 6; ++step) {
    std::vector<int32_t> next(3);
    std::vector<Decoder::Feed> feeds;
    for (int64_t s = 0; s < 3; ++s) {
      if (s == 1 && step >= 3) continue;  // a sample that stopped early drops out
      next[s] = int32_t(rng() % uint32_t(V));
      seqs[s].push_back(next[s]);
      feeds.push_back({s, {&next[s], 1}});
    }
    const auto& logits = dec.extend(feeds);
    for (size_t f = 0; f < feeds.size(); ++f) {
      const auto& seq = seqs[feeds[f].seq];
      const auto full = forward(*model, {seq}, o)[0].logits;
      const double e = step_err(logits.data() + f * V, full.data() + (seq.size() - 1) * V, V);
      worst = std::max(worst, e);
      EXPECT_LE(e, kLogitTol) << GetParam() << " step " << step << " sequence " << feeds[f].seq;
    }
  }
  std::printf("measured %s: batched KV-cache logits max-abs-err/max-abs %.2e\n", GetParam().c_str(),
              worst);
}

// Greedy generation equals argmax decoding of the full forward pass, for random prompts.
TEST_P(Generate, GreedyEqualsArgmaxOfFullForward) {
  auto model = open(GetParam());
  const int64_t V = model->config().vocab, eos = model->config().eos_id;
  std::mt19937 rng(3);
  ForwardOptions o;
  o.logits = true;
  for (int64_t len : {1, 5, 17}) {
    const auto prompt = random_ids(rng, len, V);
    std::vector<int32_t> want = prompt;
    for (int i = 0; i < 16; ++i) {
      const auto logits = forward(*model, {want}, o)[0].logits;
      const float* last = logits.data() + (int64_t(want.size()) - 1) * V;
      want.push_back(int32_t(std::max_element(last, last + V) - last));
      if (want.back() == eos) break;
    }
    EXPECT_EQ(greedy_generate(*model, prompt, 16), want) << GetParam() << " prompt length " << len;
  }
}

// Sampling: a seed reproduces its completions, another seed gives others, top-k 1 is greedy,
// and sample s does not depend on how many samples are drawn.
TEST_P(Generate, SamplingIsSeededAndConsistent) {
  auto model = open(GetParam());
  std::mt19937 rng(5);
  const auto prompt = random_ids(rng, 6, model->config().vocab);
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.sampling.temperature = 1.0;
  o.sampling.top_p = 0.95;
  o.n = 3;
  o.seed = 42;
  CpuEngine eng(*model);
  const auto a = generate(eng, prompt, o), b = generate(eng, prompt, o);
  ASSERT_EQ(a.size(), 3u);
  for (int s = 0; s < 3; ++s) EXPECT_EQ(a[s].ids, b[s].ids) << "sample " << s;
  EXPECT_NE(a[0].ids, a[1].ids);  // samples draw from different streams
  GenerateOptions one = o;
  one.n = 1;
  EXPECT_EQ(generate(eng, prompt, one)[0].ids, a[0].ids);
  GenerateOptions other = o;
  other.seed = 43;
  EXPECT_NE(generate(eng, prompt, other)[0].ids, a[0].ids);

  GenerateOptions topk1 = o;
  topk1.sampling.top_k = 1;
  const auto greedy = greedy_generate(*model, prompt, 12);
  for (const auto& c : generate(eng, prompt, topk1))
    EXPECT_EQ(std::vector<int32_t>(greedy.begin() + 6, greedy.end()), c.ids);
}

INSTANTIATE_TEST_SUITE_P(Models, Generate, ::testing::ValuesIn(model_dirs()), test::DirName());

// HF's greedy generate() on the golden models (24 new tokens).
class GoldenGenerate : public ::testing::TestWithParam<std::string> {
  void SetUp() override { test::use_golden_conventions(GetParam()); }
};

TEST_P(GoldenGenerate, GreedyReproducesTransformers) {
  const std::string dir = GetParam();
  SafetensorsFile gx(dir + "/golden_extra.safetensors");
  const auto prompt = test::id_rows(gx, "generate.prompt_ids")[0];
  const auto want = test::id_rows(gx, "generate.greedy_ids")[0];
  for (int64_t cache : {int64_t(1) << 40, int64_t(0)}) {  // resident and streamed
    Model model(dir, ModelOptions{cache});
    const auto got = greedy_generate(model, prompt, int(want.size()));
    ASSERT_EQ(got.size(), prompt.size() + want.size()) << dir;
    EXPECT_EQ(std::vector<int32_t>(got.begin() + int64_t(prompt.size()), got.end()), want) << dir;
  }
}

INSTANTIATE_TEST_SUITE_P(Dirs, GoldenGenerate, ::testing::ValuesIn(test::golden_model_dirs()),
                         test::DirName());

}  // namespace
}  // namespace hs
