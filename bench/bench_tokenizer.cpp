// Tokenizer throughput in MB of input text per second.
//   multilingual: the golden cases mixed with English prose and code, repeated to ~400 KB. Real
//                 text repeats words, so most pieces come from the word cache.
//   pseudowords:  ~400 KB of generated words that almost never repeat, so nearly every piece
//                 runs the regex and BPE: the cache-unfriendly floor.
// "Warm" reuses one tokenizer across iterations (the cache already holds the text's words);
// "Cold" loads a fresh one per iteration (untimed), so only repeats within the text help.
// "Neox" is GPT-NeoX-20B's pipeline (NFC normalizer, GPT-2's regex) on the same texts.
#include <benchmark/benchmark.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace {

const std::string kDir = std::string(HS_TEST_DATA) + "/golden/tokenizer";
const std::string kNeoxDir = std::string(HS_TEST_DATA) + "/golden/tokenizer_neox";
constexpr size_t kTextBytes = 400 * 1024;

const std::string& multilingual_text() {
  static const std::string text = [] {
    std::vector<std::string> parts;
    std::ifstream in(kDir + "/cases.json");
    for (const auto& c : nlohmann::json::parse(in)) parts.push_back(c.at("text"));
    parts.push_back(
        "Attention heads in a transformer do not all matter equally: some attend to the previous "
        "token, some to punctuation, and a few carry most of the model's ability to copy. When a "
        "head collapses, its attention pattern becomes uniform and its output norm shrinks.");
    parts.push_back(
        "static int parse(const char* s, size_t n) {\n  int v = 0;\n  for (size_t i = 0; i < n; "
        "++i) {\n    if (s[i] < '0' || s[i] > '9') return -1;\n    v = v * 10 + (s[i] - '0');\n"
        "  }\n  return v;\n}\n");
    parts.push_back(
        "La tête d'attention numéro sept ne regarde que le jeton précédent; la neuvième suit les "
        "guillemets. Die Köpfe der letzten Schicht sind fast alle redundant.");
    std::mt19937 rng(1);
    std::string t;
    while (t.size() < kTextBytes) {
      t += parts[rng() % parts.size()];
      t += rng() % 4 == 0 ? "\n" : " ";
    }
    return t;
  }();
  return text;
}

const std::string& pseudoword_text() {
  static const std::string text = [] {
    // Latin consonant-vowel pairs plus a few other scripts: ~130 syllables, 3-6 per word, so
    // words almost never repeat.
    std::vector<std::string> syllables = {"é",  "ß",  "ø",  "ст", "по", "жи", "κα", "λο", "का",
                                          "मी", "语", "言", "の", "カ", "ع",  "لا", "7",  "42"};
    for (const char c : std::string("bcdfghjklmnprstvwxz"))
      for (const char v : std::string("aeiou")) syllables.push_back({c, v});
    std::mt19937 rng(2);
    std::string t;
    while (t.size() < kTextBytes) {
      for (int k = 3 + static_cast<int>(rng() % 4); k > 0; --k)
        t += syllables[rng() % syllables.size()];
      const unsigned r = rng() % 20;
      t += r == 0 ? ", " : r == 1 ? ". " : r == 2 ? "\n" : " ";
    }
    return t;
  }();
  return text;
}

const std::string& text_for(int which) {
  return which == 0 ? multilingual_text() : pseudoword_text();
}

void encode_warm(benchmark::State& state, const hs::Tokenizer& tok) {
  const std::string& text = text_for(static_cast<int>(state.range(0)));
  benchmark::DoNotOptimize(tok.encode(text));  // fill the cache
  for (auto _ : state) benchmark::DoNotOptimize(tok.encode(text));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

void BM_EncodeWarm(benchmark::State& state) {
  static const hs::Tokenizer tok = hs::Tokenizer::from_file(kDir + "/tokenizer.json");
  encode_warm(state, tok);
}

void BM_EncodeWarmNeox(benchmark::State& state) {
  static const hs::Tokenizer tok = hs::Tokenizer::from_file(kNeoxDir + "/tokenizer.json");
  encode_warm(state, tok);
}

void BM_EncodeCold(benchmark::State& state) {
  const std::string& text = text_for(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    state.PauseTiming();
    const hs::Tokenizer tok = hs::Tokenizer::from_file(kDir + "/tokenizer.json");
    state.ResumeTiming();
    benchmark::DoNotOptimize(tok.encode(text));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

// Output bytes per second.
void BM_Decode(benchmark::State& state) {
  const hs::Tokenizer tok = hs::Tokenizer::from_file(kDir + "/tokenizer.json");
  const std::string& text = text_for(static_cast<int>(state.range(0)));
  const std::vector<int32_t> ids = tok.encode(text);
  for (auto _ : state) benchmark::DoNotOptimize(tok.decode(ids));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

void BM_Load(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(hs::Tokenizer::from_file(kDir + "/tokenizer.json"));
}

// Argument 0: multilingual, 1: pseudowords.
BENCHMARK(BM_EncodeWarm)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeWarm)->Arg(0)->Threads(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeWarmNeox)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeCold)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Decode)->Arg(0)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Load)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
