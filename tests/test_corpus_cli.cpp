// Corpora through the binary (issue 15): repair and pretrain give the same run from text files
// and gzipped JSON lines, --max-tokens, the token cache that --resume maps instead of the corpus,
// and bad input as one line.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "scratch_test.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using hs::test::slurp;
using nlohmann::json;

const std::string kTiny8 = std::string(HS_TEST_DATA) + "/golden/models/tiny8";

std::string gzip(const std::string& bytes) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&zs, uLong(bytes.size())), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  zs.avail_in = uInt(bytes.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = uInt(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

class CorpusCli : public hs::test::ScratchTest<> {
 protected:
  void SetUp() override {
    ScratchTest::SetUp();
    std::mt19937 rng(3);
    const char* words[] = {"the", "cat", "sat",  "on",   "a",    "mat", "while", "dogs",
                           "ran", "far", "away", "from", "home", "and", "birds", "sang"};
    for (int d = 0; d < 6; ++d) {
      std::string doc;
      for (int i = 0; i < 200; ++i)
        doc += std::string(words[rng() % 16]) + (rng() % 20 == 0 ? ".\n" : " ");
      docs_.push_back(doc);
    }
    fs::create_directories(dir_ / "txt");
    std::string lines;
    for (size_t d = 0; d < docs_.size(); ++d) {
      write("txt/" + std::to_string(d) + ".txt", docs_[d]);
      lines +=
          json{{"text", docs_[d]}, {"timestamp", "2019-04-25T12:57:54Z"}, {"url", "u"}}.dump() +
          "\n";
    }
    write("c4.json.gz", gzip(lines));
    write("plan.json", R"({"targets": {"0": [7], "2": [4, 6]}, "frozen_watch": {"2": [5]}})");
  }
  std::string repair(const std::string& corpus, const std::string& out,
                     const std::string& extra = "") const {
    return "repair " + kTiny8 + " --plan " + path("plan.json") + " --corpus " + corpus + " -o " +
           path(out) + " --seq 32 --accum 4 --epochs 1 --gen-tokens 4 --lr 1e-2 " + extra;
  }
  json read(const std::string& name) const { return json::parse(slurp(dir_ / name)); }
  json trajectory(const std::string& run) const {
    json t = read(run + "/trajectory.json");
    for (auto& e : t) {
      e.erase("seconds");
      e.erase("eval_seconds");
    }
    return t;
  }

  std::vector<std::string> docs_;
};

// The same documents as text files and as a gzipped C4 shard: the same tokens and the same run,
// bit for bit.
TEST_F(CorpusCli, RepairIsTheSameRunFromTextFilesAndGzippedJsonLines) {
  const auto a = run(repair(path("txt"), "a", "-q"));
  ASSERT_EQ(a.code, 0) << a.err;
  const auto b = run(repair(path("c4.json.gz"), "b"));
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_NE(b.err.find("corpus: 6 documents"), std::string::npos) << b.err;
  EXPECT_EQ(read("a/config.json")["tokens"], read("b/config.json")["tokens"]);
  EXPECT_GT(read("a/config.json")["chunks"].get<int>(), 30);
  const size_t ids = 4 * read("a/config.json")["tokens"].get<size_t>();  // after a 32-byte header
  EXPECT_EQ(slurp(dir_ / "a/corpus.tokens").substr(32, ids),
            slurp(dir_ / "b/corpus.tokens").substr(32, ids));
  EXPECT_EQ(slurp(dir_ / "a/final/model.safetensors"), slurp(dir_ / "b/final/model.safetensors"));
  EXPECT_EQ(trajectory("a"), trajectory("b"));
}

// --max-tokens cuts the stream; an interrupted run resumes from its token cache without reading
// the corpus (here made unreadable) and ends on the bytes of an uninterrupted run; the cache
// refuses other corpus settings.
TEST_F(CorpusCli, MaxTokensAndTheTokenCacheOnResume) {
  const std::string corpus = path("c4.json.gz");
  const auto a = run(repair(corpus, "a", "-q --max-tokens 1000"));
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(read("a/config.json")["tokens"], 1000);
  EXPECT_EQ(read("a/config.json")["chunks"], 1000 / 32);
  EXPECT_EQ(read("a/config.json")["max_tokens"], 1000);

  const auto b = run(repair(corpus, "b", "-q --max-tokens 1000 --interrupt-after-steps 5"));
  ASSERT_EQ(b.code, 130) << b.err;
  const auto c = run(repair(corpus, "c", "-q --max-tokens 1000 --interrupt-after-steps 5"));
  ASSERT_EQ(c.code, 130) << c.err;
  write("c4.json.gz", "no longer gzip");  // re-reading it would fail
  const auto r = run(repair(corpus, "b", "--max-tokens 1000 --resume"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("corpus: 1000 tokens from the run's token cache " + path("b/corpus.tokens")),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("tokenizing"), std::string::npos) << r.err;
  EXPECT_EQ(slurp(dir_ / "a/final/model.safetensors"), slurp(dir_ / "b/final/model.safetensors"));
  EXPECT_EQ(trajectory("a"), trajectory("b"));

  const auto other = run(repair(corpus, "c", "-q --max-tokens 999 --resume"));
  expect_error(other, {"headsurgeon: error: " + path("c/corpus.tokens") +
                       ": --max-tokens was 1000 when this run tokenized its corpus, now 999: "
                       "resume with the same settings\n"});
}

TEST_F(CorpusCli, BadCorpusIsOneLine) {
  write("bad.jsonl", "{\"text\": \"ok\"}\n{\"content\": \"no text\"}\n");
  expect_error(
      run(repair(path("bad.jsonl"), "x", "-q")),
      {"headsurgeon: error: " + path("bad.jsonl") + ":2: no field 'text' (--text-field)\n"});
  const std::string gz = slurp(dir_ / "c4.json.gz");
  write("cut.json.gz", gz.substr(0, gz.size() / 2));
  expect_error(run(repair(path("cut.json.gz"), "x", "-q")),
               {"headsurgeon: error: " + path("cut.json.gz") + ": gzip stream truncated at byte " +
                std::to_string(gz.size() / 2) + "\n"});
  EXPECT_FALSE(fs::exists(dir_ / "x" / "corpus.tokens"));
  expect_error(
      run("pretrain --corpus " + path("bad.jsonl") + " -o " + path("m")),
      {"headsurgeon: error: " + path("bad.jsonl") + ":2: no field 'text' (--text-field)\n"});
  const auto negative = run(repair(path("c4.json.gz"), "x", "--max-tokens -1"));
  EXPECT_EQ(negative.code, 2);  // a usage error
  EXPECT_NE(negative.err.find("--max-tokens"), std::string::npos) << negative.err;
}

// pretrain learns its tokenizer from the documents and trains on their stream, whichever form
// they come in; --max-tokens limits the stream; no token cache stays in the checkpoint.
TEST_F(CorpusCli, PretrainIsTheSameFromTextFilesAndGzippedJsonLines) {
  const std::string args =
      " --vocab 280 --layers 1 --hidden 16 --heads 2 --seq 16 --batch 4 --steps 6 --eval-every 3 "
      "-q -o ";
  const auto a = run("pretrain --corpus " + path("txt") + args + path("a"));
  ASSERT_EQ(a.code, 0) << a.err;
  const auto b = run("pretrain --corpus " + path("c4.json.gz") + args + path("b"));
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(slurp(dir_ / "a/tokenizer.json"), slurp(dir_ / "b/tokenizer.json"));
  EXPECT_EQ(slurp(dir_ / "a/model.safetensors"), slurp(dir_ / "b/model.safetensors"));
  EXPECT_EQ(read("a/recipe.json")["corpus_tokens"], read("b/recipe.json")["corpus_tokens"]);
  EXPECT_FALSE(fs::exists(dir_ / "b/corpus.tokens"));
  const auto c =
      run("pretrain --corpus " + path("c4.json.gz") + " --max-tokens 800" + args + path("c"));
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_EQ(read("c/recipe.json")["corpus_tokens"], 800);
  EXPECT_EQ(read("c/recipe.json")["train_chunks"].get<int>() +
                read("c/recipe.json")["val_chunks"].get<int>(),
            800 / 16);
}

}  // namespace
