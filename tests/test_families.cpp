// Every family and configuration variant through the CPU engine, against the float64 reference
// (tests/reference_model.h), on random checkpoints written as Hugging Face lays them out: the
// options the golden data do not cover (MPT with biases, clip_qkv, softmax_scale, logit_scale,
// non-power-of-two head counts of every family, Falcon's bf16 bias, untied heads, BLOOM's
// post-LN variant, half-precision storage). Then training: gradients against finite
// differences, the surgical slices against the full gradients, and a save that round-trips
// names, dtypes and bytes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "engine/cpu/decoder.h"
#include "engine/cpu/forward.h"
#include "engine/cpu/save.h"
#include "engine/cpu/train.h"
#include "random_family_model.h"
#include "reference_model.h"

namespace hs {
namespace {

namespace fs = std::filesystem;
using test::FamilySpec;

struct Variant {
  const char* name;
  FamilySpec spec;
  int64_t T;
  bool hf_eager = false;  // Falcon: the HF 5.x eager convention (the bias counted twice)
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

FamilySpec spec(const char* family, int64_t d, int64_t H, int64_t L, int64_t V) {
  FamilySpec s;
  s.family = family, s.d = d, s.H = H, s.L = L, s.V = V;
  return s;
}

std::vector<Variant> variants() {
  std::vector<Variant> v;
  {  // MPT with every option: biases, clip_qkv, softmax_scale, logit_scale, 12 heads
    FamilySpec s = spec("mpt", 48, 12, 2, 97);
    s.clip_qkv = 1.2, s.softmax_scale = 0.3, s.logit_scale = "inv_sqrt_d_model";
    v.push_back({"mpt_biases_clip_scales_12_heads", s, 29});
  }
  {  // MPT without biases, bias max 16, 6 heads, expansion 3, a numeric logit scale, bf16
    FamilySpec s = spec("mpt", 36, 6, 2, 81);
    s.biases = false, s.alibi_bias_max = 16, s.expansion_ratio = 3, s.logit_scale = 0.7;
    s.dtype = DType::BF16;
    v.push_back({"mpt_no_bias_6_heads_bf16", s, 23});
  }
  {  // Falcon, 12 heads (its bf16 bias rounds visibly), untied head
    FamilySpec s = spec("falcon", 48, 12, 2, 90);
    s.tied = false;
    v.push_back({"falcon_12_heads_untied", s, 31});
    v.push_back({"falcon_12_heads_untied_hf_eager", s, 31, true});
  }
  {  // Falcon without linear biases, an MLP width that is not 4d, 5 heads, f16 storage
    FamilySpec s = spec("falcon", 40, 5, 2, 70);
    s.biases = false, s.ffn = 72, s.dtype = DType::F16;
    v.push_back({"falcon_no_bias_5_heads_f16", s, 19});
  }
  {  // BLOOM: 12 heads post-LN; 6 heads bf16; 5 heads post-LN f16; one head, one token
    FamilySpec s = spec("bloom", 48, 12, 2, 300);
    s.post_ln = true;
    v.push_back({"bloom_post_ln_12_heads", s, 37});
    FamilySpec b = spec("bloom", 48, 6, 2, 301);
    b.dtype = DType::BF16;
    v.push_back({"bloom_6_heads_bf16", b, 20});
    FamilySpec f = spec("bloom", 40, 5, 1, 97);
    f.post_ln = true, f.dtype = DType::F16;
    v.push_back({"bloom_post_ln_5_heads_f16", f, 9});
    v.push_back({"bloom_one_head_one_token", spec("bloom", 32, 1, 2, 64), 1});
  }
  return v;
}

class Family : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    const Variant& v = GetParam();
    dir_ = (fs::temp_directory_path() / ("hs_family_" + std::to_string(::getpid()) + "_" + v.name))
               .string();
    test::write_random_family_model(dir_, v.spec, 1234);
    ::setenv("HEADSURGEON_FALCON_ALIBI", v.hf_eager ? "hf-eager" : "once", 1);
    // The fp32 engine on half-precision storage, whatever the CPU: bf16 products (a bf16
    // checkpoint on an AVX512-BF16 CPU) are checked against this path in test_cpu_bf16.
    ::setenv("HEADSURGEON_CPU_BF16", "0", 1);
    std::mt19937 rng(99);
    ids_.resize(v.T);
    for (auto& x : ids_) x = int32_t(rng() % uint32_t(v.spec.V));
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
  std::vector<int32_t> ids_;
};

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

TEST_P(Family, ForwardMatchesFloat64Reference) {
  test::RefOptions ro;
  ro.falcon_alibi_twice = GetParam().hf_eager;
  const test::RefOutput want = test::reference_forward(dir_, ids_, ro);
  const int64_t T = int64_t(ids_.size());
  for (int64_t cache : {int64_t(1) << 40, int64_t(0)}) {  // resident and streamed
    Model model(dir_, ModelOptions{cache});
    const ModelConfig& c = model.config();
    ForwardOptions o;
    o.logits = o.head_stats = o.probs = o.nll = true;
    const auto got = forward(model, {ids_}, o)[0];
    double num = 0;
    for (size_t i = 0; i < want.logits.size(); ++i)
      num = std::max(num, std::abs(double(got.logits[i]) - want.logits[i]));
    EXPECT_LE(num / max_abs(want.logits), 1e-4) << "logits, max-abs-error / max-abs-value";
    for (int64_t l = 0; l < c.n_layer; ++l)
      for (size_t k = 0; k < want.probs[l].size(); ++k)
        ASSERT_NEAR(got.probs[l][k], want.probs[l][k], 1e-5) << "layer " << l << " entry " << k;
    for (size_t k = 0; k < want.bos_mass.size(); ++k) {
      EXPECT_NEAR(got.bos_mass[k], want.bos_mass[k], 1e-5) << k;
      EXPECT_NEAR(got.entropy[k], want.entropy[k], 1e-5) << k;
      EXPECT_NEAR(got.local_mass[k], want.local_mass[k], 1e-5) << k;
    }
    if (T > 1) {
      EXPECT_NEAR(got.nll_sum, want.nll_sum, 1e-5 * std::abs(want.nll_sum));
    }
    std::printf("measured %s: logits %.2e\n", GetParam().name, num / max_abs(want.logits));
  }
}

// The KV-cache decoder runs the same block through segments: its logits after each token equal
// the full forward pass's row.
TEST_P(Family, DecoderEqualsFullForward) {
  Model model(dir_, ModelOptions{int64_t(1) << 40});
  const int64_t V = model.config().vocab, T = int64_t(ids_.size());
  ForwardOptions o;
  o.logits = true;
  const auto full = forward(model, {ids_}, o)[0].logits;
  Decoder dec(model, 2, T);
  const int64_t first = std::min<int64_t>(T, 4);
  const IncrementalDecoder::Feed prefill{1, std::span(ids_).subspan(0, first)};
  std::vector<float> got = dec.extend({&prefill, 1});
  for (int64_t t = first - 1; t < T; ++t) {
    const std::vector<float> row(full.begin() + t * V, full.begin() + (t + 1) * V);
    double num = 0, den = 0;
    for (int64_t v = 0; v < V; ++v) {
      num = std::max(num, double(std::abs(got[v] - row[v])));
      den = std::max(den, double(std::abs(row[v])));
    }
    EXPECT_LE(num / den, 1e-5) << "position " << t;
    if (t + 1 < T) {
      const IncrementalDecoder::Feed f{1, std::span(ids_).subspan(t + 1, 1)};
      got = dec.extend({&f, 1});
    }
  }
}

// Training: the summed next-token loss's gradient of every tensor against central differences
// of the fp32 forward pass, at coordinates drawn from each tensor (clipped qkv, biases, an
// untied head, embedding norms where they exist).
TEST_P(Family, GradientsMatchFiniteDifferences) {
  if (ids_.size() < 2) GTEST_SKIP() << "one token predicts nothing";
  Model model(dir_, ModelOptions{int64_t(1) << 40});
  TrainWeights w = TrainWeights::from_model(model);
  Gradients g = Gradients::all(w);
  loss_and_grad(w, ids_, 1.0, g);
  auto loss = [&] {
    TrainWeightsSource src(w);
    ForwardOptions o;
    o.nll = true;
    return forward(src, {ids_}, o)[0].nll_sum;
  };
  std::mt19937 rng(7);
  auto grads = g.full.params();
  auto params = w.params();
  int checked = 0;
  for (size_t k = 0; k < params.size(); ++k) {
    std::vector<float>& p = *params[k].buf;
    for (int rep = 0; rep < 3; ++rep) {
      const size_t i = rng() % p.size();
      const float x0 = p[i];
      const float h = std::max(1e-2f, 1e-2f * std::abs(x0));
      p[i] = x0 + h;
      const double up = loss();
      p[i] = x0 - h;
      const double down = loss();
      p[i] = x0;
      const double fd = (up - down) / (2 * double(h));
      const double an = (*grads[k].buf)[i];
      // fp32 forward passes: the difference carries ~1e-7 |loss| / h of rounding.
      EXPECT_NEAR(an, fd, 2e-2 * std::max(1.0, std::abs(fd))) << params[k].name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}

// The surgical gradients are exactly the gathered slices of the full ones (in every layout),
// and only the target heads' slices move when the optimizer steps.
TEST_P(Family, SurgicalSlicesAreSlicesOfTheFullGradients) {
  if (ids_.size() < 2) GTEST_SKIP() << "one token predicts nothing";
  Model model(dir_, ModelOptions{int64_t(1) << 40});
  TrainWeights w = TrainWeights::from_model(model);
  const ModelConfig& c = w.config;
  const std::vector<HeadRef> targets = {{0, int(c.n_head - 1)}, {int(c.n_layer - 1), 0}};
  Gradients full = Gradients::all(w), surg = Gradients::surgical(c, targets);
  loss_and_grad(w, ids_, 0.1, full);
  loss_and_grad(w, ids_, 0.1, surg);
  TargetSlices want = gather_slices(full.full, targets);
  auto got = surg.buffers(), exp = want.buffers();
  ASSERT_EQ(got.size(), exp.size());
  ASSERT_EQ(got.size(), targets.size() * (c.linear_bias ? 3 : 2));
  for (size_t k = 0; k < got.size(); ++k) {
    double num = 0, den = 0;
    for (size_t i = 0; i < got[k]->size(); ++i) {
      num = std::max(num, double(std::abs((*got[k])[i] - (*exp[k])[i])));
      den = std::max(den, double(std::abs((*exp[k])[i])));
    }
    EXPECT_LE(num, 1e-5 * std::max(den, 1e-3)) << "slice " << k;
  }
}

// Saving writes the family's names and each tensor's dtype, in the checkpoint's qkv layout: a
// model loaded and saved unchanged gives back every tensor byte for byte; after surgery only
// the target heads' rows and columns differ.
TEST_P(Family, SaveRoundTripsNamesDtypesAndBytes) {
  Model model(dir_, ModelOptions{0});
  TrainWeights w = TrainWeights::from_model(model);
  const std::string out = dir_ + "_saved";
  save_checkpoint(out, w, model.checkpoint().config_json(), &model.checkpoint(), DType::F32,
                  dir_ + "/tokenizer.json");
  {
    SafetensorsFile a(dir_ + "/model.safetensors"), b(out + "/model.safetensors");
    ASSERT_EQ(a.tensors().size(), b.tensors().size());
    for (const auto& [name, t] : a.tensors()) {
      const TensorView* u = b.find(name);
      ASSERT_NE(u, nullptr) << name;
      EXPECT_EQ(u->dtype, t.dtype) << name;
      EXPECT_EQ(u->shape, t.shape) << name;
      ASSERT_EQ(u->nbytes, t.nbytes) << name;
      EXPECT_EQ(std::memcmp(u->data, t.data, t.nbytes), 0) << name;
    }
    const Checkpoint back(out);
    EXPECT_EQ(back.config().family, model.config().family);
    EXPECT_EQ(back.config().n_head, model.config().n_head);
    EXPECT_EQ(back.config().clip_qkv, model.config().clip_qkv);
    EXPECT_EQ(back.config().logit_scale, model.config().logit_scale);
    EXPECT_EQ(back.config().tied_head, model.config().tied_head);
  }
  // Surgery on the last head of layer 0: in the file, the rows that moved are exactly that
  // head's q, k and v rows (wherever the family stores them) and its output columns.
  const ModelConfig& c = w.config;
  const int64_t d = c.hidden, hd = c.head_dim(), h = c.n_head - 1;
  TargetSlices s = gather_slices(w, {{0, int(h)}});
  reinitialize(s, InitKind::XavierNormal, 5);
  scatter_slices(s, w);
  save_checkpoint(out, w, model.checkpoint().config_json(), &model.checkpoint(), DType::F32,
                  dir_ + "/tokenizer.json");
  SafetensorsFile a(dir_ + "/model.safetensors"), b(out + "/model.safetensors");
  std::vector<bool> head_row(3 * d, false);
  for (int64_t r = 0; r < 3 * hd; ++r)
    head_row[qkv_file_row(c.qkv_layout, qkv_row(h, 0, hd) + r, c.n_head, hd)] = true;
  const std::string qkv = hf_tensor_name(c, LayerRole::wqkv, 0),
                    wo = hf_tensor_name(c, LayerRole::wo, 0);
  for (const auto& [name, t] : a.tensors()) {
    const TensorView& u = *b.find(name);
    const size_t es = dtype_size(t.dtype);
    if (name == qkv) {
      for (int64_t r = 0; r < 3 * d; ++r) {
        const bool same = std::memcmp(u.data + r * d * es, t.data + r * d * es, d * es) == 0;
        EXPECT_EQ(same, !head_row[r]) << "row " << r;
      }
    } else if (name == wo) {
      for (int64_t r = 0; r < d; ++r)
        for (int64_t col = 0; col < d; ++col) {
          const size_t at = (r * d + col) * es;
          const bool in_head = col >= h * hd && col < (h + 1) * hd;
          if (!in_head) {
            EXPECT_EQ(std::memcmp(u.data + at, t.data + at, es), 0) << r << "," << col;
          }
        }
    } else if (name == hf_tensor_name(c, LayerRole::bqkv, 0)) {
      for (int64_t r = 0; r < 3 * d; ++r)
        if (!head_row[r]) {
          EXPECT_EQ(std::memcmp(u.data + r * es, t.data + r * es, es), 0) << r;
        }
    } else {
      EXPECT_EQ(std::memcmp(u.data, t.data, t.nbytes), 0) << name;
    }
  }
  fs::remove_all(out);
}

INSTANTIATE_TEST_SUITE_P(Variants, Family, ::testing::ValuesIn(variants()),
                         [](const auto& p) { return std::string(p.param.name); });

}  // namespace
}  // namespace hs
