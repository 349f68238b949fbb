// The headsurgeon binary as a user meets it: outputs, JSON contracts, exit codes, and one clear
// error line (naming the file and the problem) for each kind of bad input (docs/numerics.md §5).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "golden_data.h"
#include "io/safetensors.h"
#include "scratch_test.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

const std::string kTiny8 = std::string(HS_TEST_DATA) + "/golden/models/tiny8";

using hs::test::Result;

using hs::test::slurp;

class Cli : public hs::test::ScratchTest<> {
 protected:
  // A copy of tiny8 that a test may break.
  fs::path copy_model() {
    const fs::path m = dir_ / ("model" + std::to_string(++copies_));
    fs::copy(kTiny8, m);
    for (auto& e : fs::directory_iterator(m))
      fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
    return m;
  }
  int copies_ = 0;
};

TEST_F(Cli, HelpForEverySubcommand) {
  for (const char* sub : {"", "diagnose", "tokenize", "ppl", "plan", "repair", "dormancy", "ablate",
                          "generate", "drift", "report", "pretrain", "demo", "download"}) {
    const Result r = run(std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0) << sub;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << sub;
  }
}

TEST_F(Cli, UsageErrorsExit2) {
  EXPECT_EQ(run("").code, 2);
  EXPECT_EQ(run("diagnose").code, 2);  // MODEL missing
  EXPECT_EQ(run("diagnose " + kTiny8 + " --no-such-option").code, 2);
  EXPECT_EQ(run("frobnicate").code, 2);
}

// --device cuda: where no usable GPU is present (CI), one line naming why and exit 1; where one
// is, the same diagnosis as the CPU within bf16 tolerance. An unknown device is a usage error.
TEST_F(Cli, DeviceChoice) {
  EXPECT_EQ(run("diagnose " + kTiny8 + " --device tpu").code, 2);
  EXPECT_EQ(run("ppl " + kTiny8 + " --heldout --gpu-dtype f64").code, 2);
  // A bad default from the environment is named as such (one line, exit 1), and --device wins.
  setenv("HEADSURGEON_DEVICE", "tpu", 1);
  expect_error(run("diagnose " + kTiny8 + " -q"), {"HEADSURGEON_DEVICE", "'tpu'"});
  EXPECT_EQ(run("diagnose " + kTiny8 + " -q --device cpu").code, 0);
  unsetenv("HEADSURGEON_DEVICE");
  const fs::path cpu = dir_ / "cpu.json", gpu = dir_ / "gpu.json";
  ASSERT_EQ(run("diagnose " + kTiny8 + " -q --device cpu --json " + cpu.string()).code, 0);
  const Result r = run("diagnose " + kTiny8 + " -q --device cuda --json " + gpu.string());
  if (r.code != 0) {
    expect_error(r, {"--device cuda:"});
    EXPECT_FALSE(fs::exists(gpu));
    return;
  }
  const auto a = nlohmann::json::parse(slurp(cpu)), b = nlohmann::json::parse(slurp(gpu));
  for (size_t k = 0; k < a["heads_detail"].size(); ++k)
    EXPECT_NEAR(double(a["heads_detail"][k]["bos_mass"]), double(b["heads_detail"][k]["bos_mass"]),
                1e-2);
}

TEST_F(Cli, DiagnoseTableJsonAndSvg) {
  const fs::path js = dir_ / "d.json", svg = dir_ / "d.svg";
  const Result r = run("diagnose " + kTiny8 + " --json " + js.string() + " --svg " + svg.string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("operational"), std::string::npos) << r.out;
  const auto j = nlohmann::json::parse(slurp(js));
  for (const char* k : {"model", "layers", "heads", "prompts", "tokens", "thresholds",
                        "heads_detail", "summary", "band"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["layers"], 3);
  EXPECT_EQ(j["heads"], 8);
  ASSERT_EQ(j["heads_detail"].size(), 24u);
  EXPECT_EQ(j["tokens"][0], 71);  // the paper's prompt under this tokenizer (golden diag ids)
  const auto& s = j["summary"];
  EXPECT_EQ(int(s["healthy"]) + int(s["bos_sink"]) + int(s["dead"]) + int(s["low_entropy"]), 24);
  const std::string svgs = slurp(svg);
  EXPECT_EQ(svgs.rfind("<svg", 0), 0u);
  EXPECT_NE(svgs.find("</svg>"), std::string::npos);
}

TEST_F(Cli, DiagnoseSeveralPromptsAndBos) {
  const fs::path pf = write("p.txt", "Another prompt, quite different from the first one.");
  const Result r = run("diagnose " + kTiny8 + " --bos --prompt 'Hello world' --prompt-file " +
                       pf.string() + " --json -");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);  // --json - : JSON only on stdout
  EXPECT_EQ(j["prompts"].size(), 2u);
  EXPECT_EQ(j["tokens"][0], 6);  // <s> + 5 tokens of "Hello world"
  EXPECT_TRUE(j["bos"]);
  EXPECT_GT(double(j["heads_detail"][0]["bos_mass_std"]), 0.0);
}

TEST_F(Cli, TokenizeMatchesGoldenCase) {
  const fs::path f = write("t.txt", "Hello world");
  const Result r = run("tokenize " + kTiny8 + " " + f.string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["ids"], nlohmann::json({43, 729, 362, 7595, 2378}));
}

TEST_F(Cli, PplTextIdsAndHeldout) {
  const std::string text = "The river carried sediment downstream, depositing layers of stone.";
  const fs::path tf = write("a.txt", text);
  const Result tok = run("tokenize " + kTiny8 + " " + tf.string());
  ASSERT_EQ(tok.code, 0);
  std::string ids;
  const auto tj = nlohmann::json::parse(tok.out);
  for (const auto& v : tj["ids"]) ids += std::to_string(int(v)) + " ";
  const fs::path idf = write("a.ids", ids + "\n\n" + ids + "\n");
  const Result a = run("ppl " + kTiny8 + " --text " + tf.string() + " --json -");
  const Result b = run("ppl " + kTiny8 + " --ids " + idf.string() + " --json -");
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  const auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(ja["sequences"], 1);
  EXPECT_EQ(jb["sequences"], 2);  // the blank line is not a sequence
  EXPECT_EQ(int(jb["tokens_scored"]), 2 * int(ja["tokens_scored"]));
  EXPECT_NEAR(double(ja["nll_mean"]), double(jb["nll_mean"]), 1e-6);
  EXPECT_NEAR(std::exp(double(ja["nll_mean"])), double(ja["ppl"]), 1e-6 * double(ja["ppl"]));

  const Result h = run("ppl " + kTiny8 + " --heldout --json -");
  ASSERT_EQ(h.code, 0) << h.err;
  const auto jh = nlohmann::json::parse(h.out);
  EXPECT_EQ(jh["sequences"], 12);
  // A random model over 8192 tokens: perplexity near the vocabulary size, far from 1.
  EXPECT_GT(double(jh["ppl"]), 100.0);

  // Windows: max-length 8 splits the text into several windows, each scored on its own.
  const Result w = run("ppl " + kTiny8 + " --text " + tf.string() + " --max-length 8 --json -");
  ASSERT_EQ(w.code, 0) << w.err;
  EXPECT_GT(int(nlohmann::json::parse(w.out)["windows"]), 1);
}

TEST_F(Cli, BadModelInputs) {
  expect_error(run("diagnose " + (dir_ / "nope").string()), {"nope", "not"});

  fs::path m = copy_model();
  fs::resize_file(m / "model.safetensors", 1000);  // truncated: header promises more data
  expect_error(run("diagnose " + m.string()), {"model.safetensors"});

  m = copy_model();
  {
    std::fstream f(m / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    const uint64_t huge = uint64_t(1) << 40;  // header length larger than the file
    f.write(reinterpret_cast<const char*>(&huge), 8);
  }
  expect_error(run("diagnose " + m.string()), {"model.safetensors"});

  m = copy_model();
  auto cfg = nlohmann::json::parse(slurp(m / "config.json"));
  cfg.erase("n_head");
  std::ofstream(m / "config.json") << cfg.dump();
  expect_error(run("diagnose " + m.string()), {"config.json", "n_head"});

  cfg["n_head"] = 7;  // does not divide 64
  std::ofstream(m / "config.json") << cfg.dump();
  expect_error(run("diagnose " + m.string()), {"config.json", "divisible"});

  m = copy_model();
  std::ofstream(m / "tokenizer.json") << R"({"model": {"type": "WordPiece", "vocab": {}}})";
  expect_error(run("diagnose " + m.string()), {"tokenizer.json"});
}

TEST_F(Cli, BadTextInputs) {
  const fs::path bad = write("bad.txt", std::string("abc\xff\xfe", 5));
  expect_error(run("diagnose " + kTiny8 + " --prompt-file " + bad.string()), {"bad.txt", "UTF-8"});
  expect_error(run("ppl " + kTiny8 + " --text " + bad.string()), {"bad.txt", "UTF-8"});
  const fs::path empty = write("empty.txt", "");
  expect_error(run("ppl " + kTiny8 + " --text " + empty.string()), {"empty.txt", "empty"});
  expect_error(run("ppl " + kTiny8 + " --text " + (dir_ / "missing.txt").string()),
               {"missing.txt"});
  const fs::path ids = write("x.ids", "1 2 3\n4 99999 5\n");
  expect_error(run("ppl " + kTiny8 + " --ids " + ids.string()), {"x.ids:2", "99999"});
  const fs::path junk = write("y.ids", "1 2 three\n");
  expect_error(run("ppl " + kTiny8 + " --ids " + junk.string()), {"y.ids:1", "three"});
  expect_error(run("ppl " + kTiny8), {"nothing to score"});
}

TEST_F(Cli, OutputToDeviceFileWritesInPlace) {
  // Atomic writes rename a temp file over the target: never over a device or a FIFO.
  const fs::path fifo = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string cmd = "cat " + fifo.string() + " > " + (dir_ / "got.json").string() + " &";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const Result r = run("diagnose " + kTiny8 + " -q --json " + fifo.string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::is_fifo(fifo));
  for (int i = 0; i < 100 && slurp(dir_ / "got.json").empty(); ++i) ::usleep(20000);
  EXPECT_EQ(nlohmann::json::parse(slurp(dir_ / "got.json"))["heads"], 8);
}

TEST_F(Cli, DormancyCountsAgainstNormsComputedHere) {
  // Products ||W_up[i,:]|| * ||W_down[:,i]|| computed independently from the file; a threshold
  // between two of them must give exactly the count below it.
  hs::SafetensorsFile f(kTiny8 + "/model.safetensors");
  const int64_t d = 64, F = 256;
  std::vector<double> prods;
  for (int l = 0; l < 3; ++l) {
    const std::string p = "transformer.h." + std::to_string(l) + ".mlp.";
    const auto* up = reinterpret_cast<const float*>(f.find(p + "dense_h_to_4h.weight")->data);
    const auto* down = reinterpret_cast<const float*>(f.find(p + "dense_4h_to_h.weight")->data);
    for (int64_t i = 0; i < F; ++i) {
      double u = 0, w = 0;
      for (int64_t k = 0; k < d; ++k) u += double(up[i * d + k]) * up[i * d + k];
      for (int64_t o = 0; o < d; ++o) w += double(down[o * F + i]) * down[o * F + i];
      prods.push_back(std::sqrt(u) * std::sqrt(w));
    }
  }
  std::sort(prods.begin(), prods.end());
  const double threshold = (prods[99] + prods[100]) / 2;  // exactly 100 below
  char arg[64];
  std::snprintf(arg, sizeof arg, " --threshold %.17g --json -", threshold);
  const Result r = run("dormancy " + kTiny8 + arg);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["total"]["dormant"], 100);
  EXPECT_EQ(j["total"]["neurons"], 768);
  EXPECT_EQ(j["layers"].size(), 3u);
}

TEST_F(Cli, AblatingAnMlpEqualsZeroingItsWeights) {
  const Result r = run("ablate " + kTiny8 + " --groups 0-1 --json - -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["layers"].size(), 3u);
  ASSERT_EQ(j["groups"].size(), 1u);
  // The same model with layer 1's dense_4h_to_h weight and bias zeroed, scored by `ppl`.
  const fs::path m = dir_ / "zeroed";
  hs::test::copy_model_edited(kTiny8, m, [](const std::string& name, std::vector<std::byte>& b) {
    if (name.starts_with("transformer.h.1.mlp.dense_4h_to_h."))
      std::fill(b.begin(), b.end(), std::byte{0});
  });
  const Result p = run("ppl " + m.string() + " --heldout --json - -q");
  ASSERT_EQ(p.code, 0) << p.err;
  const double want = nlohmann::json::parse(p.out)["ppl"];
  EXPECT_NEAR(double(j["layers"][1]["ppl"]), want, 1e-9 * want);
  EXPECT_NE(double(j["layers"][1]["ppl"]), double(j["baseline_ppl"]));
  expect_error(run("ablate " + kTiny8 + " --groups 2-5"), {"--groups"});
}

TEST_F(Cli, UnwritableOutputLeavesNothingBehind) {
  const Result r = run("diagnose " + kTiny8 + " --json " + (dir_ / "no/such/dir/d.json").string());
  expect_error(r, {"d.json"});
}

TEST_F(Cli, GeneratePromptsFileToJsonl) {
  // Blank lines are skipped; a CRLF line loses its \r.
  const fs::path pf =
      write("prompts.txt", "The river carried\n\n   \nfn main() {\r\nLa structure du langage\n");
  const fs::path out = dir_ / "gen.jsonl";
  const std::string args = "generate " + kTiny8 + " --prompts-file " + pf.string() +
                           " --n 2 --max-new-tokens 5 --seed 3 --out ";
  const Result r = run(args + out.string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
  auto lines_of = [](const std::string& text) {
    std::vector<nlohmann::json> v;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) v.push_back(nlohmann::json::parse(line));
    return v;
  };
  const auto lines = lines_of(slurp(out));
  ASSERT_EQ(lines.size(), 6u);  // 3 prompts x 2 samples
  const std::vector<std::string> prompts = {"The river carried", "fn main() {",
                                            "La structure du langage"};
  const int file_line[] = {1, 4, 5};
  for (size_t k = 0; k < lines.size(); ++k) {
    const auto& j = lines[k];
    for (const char* key :
         {"model", "prompt_index", "line", "prompt", "sample", "text", "completion", "ids",
          "prompt_tokens", "new_tokens", "stop", "seconds", "settings"})
      EXPECT_TRUE(j.contains(key)) << key;
    EXPECT_EQ(j["prompt_index"], k / 2);
    EXPECT_EQ(j["sample"], k % 2);
    EXPECT_EQ(j["prompt"], prompts[k / 2]);
    EXPECT_EQ(j["line"], file_line[k / 2]);
    EXPECT_LE(int(j["new_tokens"]), 5);
    EXPECT_EQ(j["ids"].size(), size_t(j["prompt_tokens"]) + size_t(j["new_tokens"]));
    EXPECT_EQ(std::string(j["text"]).rfind(prompts[k / 2], 0), 0u) << j["text"];
    EXPECT_EQ(j["settings"]["seed"], 3);
  }
  // The same seed gives the same completions (JSONL on stdout with "--out -").
  const Result again = run(args + "- -q");
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(again.err, "");
  const auto lines2 = lines_of(again.out);
  ASSERT_EQ(lines2.size(), 6u);
  for (size_t k = 0; k < lines.size(); ++k) EXPECT_EQ(lines2[k]["ids"], lines[k]["ids"]) << k;
}

TEST_F(Cli, GeneratePromptTextAndJson) {
  const std::string args =
      "generate " + kTiny8 + " --prompt 'Hello world' --temperature 0 --max-new-tokens 4";
  const Result t = run(args);
  ASSERT_EQ(t.code, 0) << t.err;
  const Result j = run(args + " --json -");
  ASSERT_EQ(j.code, 0) << j.err;
  const auto js = nlohmann::json::parse(j.out);  // --json - : JSON only on stdout
  ASSERT_EQ(js["completions"].size(), 1u);
  const auto& c = js["completions"][0];
  EXPECT_EQ(t.out, std::string(c["text"]) + "\n");
  EXPECT_EQ(c["ids"].size(), 9u);  // "Hello world" is 5 tokens, then 4 greedy ones
  EXPECT_EQ(nlohmann::json(std::vector<int>(c["ids"].begin(), c["ids"].begin() + 5)),
            nlohmann::json({43, 729, 362, 7595, 2378}));
  const Result b = run(args + " --bos --json -");
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(nlohmann::json::parse(b.out)["completions"][0]["ids"][0], 1);  // <s>
}

TEST_F(Cli, GenerateBadInputs) {
  const std::string g = "generate " + kTiny8;
  const std::string missing = (dir_ / "no_such_prompts.txt").string();
  expect_error(run(g + " --prompts-file " + missing), {missing});
  const fs::path blank = write("blank.txt", "\n   \n\n");
  expect_error(run(g + " --prompts-file " + blank.string()), {blank.string(), "no prompts"});
  const fs::path bad = write("bad.txt", "ok line\n\xff\xfe broken\n");
  expect_error(run(g + " --prompts-file " + bad.string()), {bad.string(), "UTF-8"});
  expect_error(run(g + " --prompt ''"), {"--prompt", "empty prompt"});
  EXPECT_EQ(run(g).code, 2);  // neither --prompt nor --prompts-file
  EXPECT_EQ(run(g + " --prompt x --prompts-file " + blank.string()).code, 2);
  EXPECT_EQ(run(g + " --prompt x --temperature -1").code, 2);
  EXPECT_EQ(run(g + " --prompt x --top-p 1.5").code, 2);
}

TEST_F(Cli, GenerateLeavesIdsPastTheTokenizerOutOfTheText) {
  // Embedding rows beyond the tokenizer's vocabulary (BLOOM has 200 such padding rows) can be
  // sampled; like HF's decode, the text skips them and the ids keep them.
  const fs::path m = dir_ / "wide";
  const std::string mk = (fs::path(HS_BINARY).parent_path() / "make_random_checkpoint").string() +
                         " --shape custom --hidden 64 --layers 2 --heads 4 --vocab 16384 " +
                         "--dtype f32 --tokenizer " + kTiny8 + "/tokenizer.json -o " + m.string();
  ASSERT_EQ(std::system((mk + " >/dev/null 2>&1").c_str()), 0);
  const Result r = run("generate " + m.string() +
                       " --prompt Hello --temperature 1 --top-p 1 --max-new-tokens 20 --json - -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto c = nlohmann::json::parse(r.out)["completions"][0];
  EXPECT_TRUE(std::any_of(c["ids"].begin(), c["ids"].end(), [](int id) { return id >= 8192; }));
  EXPECT_EQ(std::string(c["text"]).rfind("Hello", 0), 0u);
}

}  // namespace

// pretrain and demo check their inputs before any training, with one line naming the problem.
TEST_F(Cli, PretrainAndDemoBadInputs) {
  const std::string corpus = write("corpus.txt", "def f(x):\n    return x\n").string();
  const std::string out = (dir_ / "m").string();
  expect_error(run("pretrain --corpus " + corpus + " -o " + out + " --vocab 100"), {"--vocab"});
  expect_error(run("pretrain --corpus " + corpus + " -o " + out + " --collapse " +
                   (dir_ / "nope.json").string()),
               {"nope.json", "cannot open"});
  expect_error(run("pretrain --corpus " + (dir_ / "missing").string() + " -o " + out),
               {"missing", "does not exist"});
  expect_error(run("pretrain --corpus " + corpus + " -o " + out + " --hidden 100 --heads 16"),
               {"--hidden"});
  // A model without the demo's held-out file.
  expect_error(run("demo -q --no-control --model " + kTiny8 + " -o " + (dir_ / "d").string()),
               {"heldout.txt"});
}
