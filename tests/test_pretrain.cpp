// The demo model's recipe: the BPE trainer, and pretraining from scratch with and without the
// induced-collapse term.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "diagnose/run.h"
#include "engine/cpu/weights.h"
#include "pretrain/pretrain.h"
#include "test_util.h"
#include "text/bpe_trainer.h"
#include "text/tokenizer.h"
#include "util/error.h"
#include "util/files.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A small Python-like corpus from a fixed template: deterministic, learnable in a few steps.
std::string synthetic_corpus(int functions) {
  const char* names[] = {"alpha", "beta", "gamma", "delta", "value", "count", "index", "total"};
  std::string s;
  for (int i = 0; i < functions; ++i) {
    const std::string a = names[i % 8], b = names[(i * 3 + 1) % 8];
    s += "def " + a + "_" + b + "(" + a + ", " + b + "):\n    return " + a + " + " + b + " * " +
         std::to_string(i % 10) + "\n\n";
  }
  return s;
}

fs::path fresh_dir(const std::string& name) {
  const fs::path d =
      fs::temp_directory_path() / ("hs-pretrain-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST(BpeTrainer, PipelineIsBloomsAndRoundTrips) {
  const std::string text = synthetic_corpus(200) + "Größe naïve 東京 — ok?\n";
  const json tj = hs::train_bpe({text}, {400, 2});
  // Everything but the model must be BLOOM's pipeline, exactly as in the golden tokenizer.json.
  const json golden =
      hs::read_json_file(std::string(HS_TEST_DATA) + "/golden/tokenizer/tokenizer.json");
  for (const char* key : {"pre_tokenizer", "decoder", "normalizer", "added_tokens"})
    EXPECT_EQ(tj[key], golden[key]) << key;
  const hs::Tokenizer tok = hs::Tokenizer::from_json(tj, "trained");
  // Merges stop early when no pair is seen twice; this text has enough for 300+ tokens.
  EXPECT_EQ(tok.vocab_size(), tj["model"]["vocab"].size());
  EXPECT_GT(tok.vocab_size(), 300u);
  EXPECT_LE(tok.vocab_size(), 400u);
  for (const std::string& s : {text, std::string("def omega(x):\n\treturn x ** 2  # ünïcode ✓"),
                               std::string("   spaces   and\r\nnewlines\n\n")}) {
    const auto ids = tok.encode(s);
    EXPECT_EQ(tok.decode(ids), s);
  }
  // Frequent words became single tokens.
  EXPECT_EQ(tok.encode(" return").size(), 1u);
}

TEST(BpeTrainer, DeterministicAndStopsAtMinFrequency) {
  const std::string text = synthetic_corpus(50);
  EXPECT_EQ(hs::train_bpe({text}, {1000, 2}).dump(), hs::train_bpe({text}, {1000, 2}).dump());
  // Far fewer distinct pairs than 1000 merges: training stops when no pair is seen twice.
  const json tj = hs::train_bpe({text}, {100000, 2});
  EXPECT_LT(tj["model"]["vocab"].size(), 1000u);
  EXPECT_THROW(hs::train_bpe({text}, {100, 2}), hs::Error);  // below 4 + 256
}

TEST(BpeTrainer, MergesMatchHfSemanticsOnAToyCase) {
  // BLOOM's regex splits "ab ab ab abc abc" into "ab", " ab" x2, " abc" x2. Pair counts:
  // (a,b) 5, (Ġ,a) 4, (b,c) 2 -> a+b; then (Ġ,ab) 4 -> Ġ+ab; then (Ġab,c) 2; then no pair is
  // seen twice, so training stops below the requested size.
  const json tj = hs::train_bpe({"ab ab ab abc abc"}, {300, 2});
  EXPECT_EQ(tj["model"]["merges"], json::parse(R"([["a", "b"], ["Ġ", "ab"], ["Ġab", "c"]])"));
  EXPECT_EQ(tj["model"]["vocab"].size(), 4u + 256u + 3u);
  const hs::Tokenizer tok = hs::Tokenizer::from_json(tj, "toy");
  EXPECT_EQ(tok.encode(" abc").size(), 1u);
}

TEST(Pretrain, LearnsAndCollapsesChosenHeads) {
  const fs::path dir = fresh_dir("collapse");
  std::ofstream(dir / "corpus.txt") << synthetic_corpus(1500);
  std::ofstream(dir / "collapse.json") << R"({"targets": {"1": [2, 3]}})";
  hs::PretrainOptions o;
  o.corpus = {(dir / "corpus.txt").string()};
  o.out_dir = (dir / "model").string();
  o.vocab_size = 300;
  o.layers = 2;
  o.hidden = 32;
  o.heads = 4;
  o.seq = 32;
  o.batch = 8;
  o.steps = 120;
  o.warmup = 10;
  o.lr = 3e-3;
  o.eval_every = 40;
  o.collapse = (dir / "collapse.json").string();
  o.collapse_strength = 0.5;
  o.bos = true;  // the sink term only reaches the heads' own Q/K: <s> gives them a fixed key
  o.quiet = true;
  hs::run_pretrain(o);

  const json recipe = hs::read_json_file((dir / "model" / "recipe.json").string());
  const json& curve = recipe["curve"];
  ASSERT_EQ(curve.size(), 3u);
  // Validation perplexity falls far below the 300-token uniform guess and keeps falling
  // (measured: 16.3, 8.3, 7.1).
  EXPECT_LT(curve[1]["val_ppl"].get<double>(), curve[0]["val_ppl"].get<double>());
  EXPECT_LT(curve[2]["val_ppl"].get<double>(), curve[1]["val_ppl"].get<double>());
  EXPECT_LT(curve[2]["val_ppl"].get<double>(), 20.0);

  hs::Model m((dir / "model").string(), hs::ModelOptions{});
  EXPECT_EQ(m.config().n_layer, 2);
  EXPECT_EQ(m.config().vocab, 300);
  const hs::Tokenizer tok = hs::Tokenizer::from_file(m.checkpoint().tokenizer_path());
  hs::DiagnoseOptions dopt;
  dopt.prompts = {synthetic_corpus(3)};
  dopt.bos = true;
  const hs::Diagnosis d = hs::diagnose(m, tok, dopt, "pretrained");
  for (int h = 0; h < 4; ++h) {
    const double bos = d.at(1, h).bos_mass;
    if (h >= 2)
      EXPECT_GT(bos, 0.9) << "collapsed head L1H" << h;
    else
      EXPECT_LT(bos, 0.5) << "free head L1H" << h;
  }
}

TEST(Pretrain, SameSeedSameBytes) {
  const fs::path dir = fresh_dir("seed");
  std::ofstream(dir / "corpus.txt") << synthetic_corpus(300);
  hs::PretrainOptions o;
  o.corpus = {(dir / "corpus.txt").string()};
  o.vocab_size = 280;
  o.layers = 1;
  o.hidden = 16;
  o.heads = 2;
  o.seq = 16;
  o.batch = 4;
  o.steps = 5;
  o.eval_every = 5;
  o.quiet = true;
  o.out_dir = (dir / "a").string();
  hs::run_pretrain(o);
  o.out_dir = (dir / "b").string();
  hs::run_pretrain(o);
  EXPECT_EQ(hs::test::slurp(dir / "a" / "model.safetensors"),
            hs::test::slurp(dir / "b" / "model.safetensors"));
  o.seed = 1;
  o.out_dir = (dir / "c").string();
  hs::run_pretrain(o);
  EXPECT_NE(hs::test::slurp(dir / "a" / "model.safetensors"),
            hs::test::slurp(dir / "c" / "model.safetensors"));
}

TEST(Pretrain, TooSmallCorpusNamesTheFile) {
  const fs::path dir = fresh_dir("small");
  std::ofstream(dir / "tiny.txt") << "def f(): pass\n";
  hs::PretrainOptions o;
  o.corpus = {(dir / "tiny.txt").string()};
  o.out_dir = (dir / "m").string();
  o.vocab_size = 270;
  o.quiet = true;
  try {
    hs::run_pretrain(o);
    FAIL() << "expected an error";
  } catch (const hs::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tiny.txt"), std::string::npos) << e.what();
  }
}
