// Corpus tokenizing throughput on a C4-style file (bench/NOTES.md).
//   bench_corpus make FILE.json.gz --mb 120   writes a deterministic C4-like shard: JSON lines
//       with text, timestamp and url, English-like prose from a Zipfian vocabulary (some accented
//       words, typographic quotes, paragraphs), gzipped; --mb is the size before compression.
//   bench_corpus run FILE... --threads 2      times the reader on one thread (gunzip and line
//       splitting; then with each line's JSON parsed), then tokenize_corpus on --threads,
//       reporting MB of document text per second. --cache DIR writes the token cache there too.
#include <sys/resource.h>
#include <zlib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

#include "text/corpus.h"
#include "text/corpus_reader.h"
#include "text/token_cache.h"
#include "text/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// CPU time of the whole process (every thread): on a shared machine, where wall time also counts
// the other jobs, this says what the work itself costs.
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// Deterministic across standard libraries: raw mt19937_64 output only (the distributions'
// algorithms are implementation-defined).
struct Gen {
  std::mt19937_64 rng;
  uint64_t below(uint64_t n) { return rng() % n; }
  double unit() { return double(rng() >> 11) * 0x1.0p-53; }
};

std::string make_word(Gen& g) {
  static const char* onsets[] = {"b",  "c",  "d",  "f",  "g",  "h",  "j",  "k",  "l",
                                 "m",  "n",  "p",  "r",  "s",  "t",  "v",  "w",  "st",
                                 "tr", "pl", "br", "ch", "sh", "th", "gr", "cl", ""};
  static const char* vowels[] = {"a", "e", "i", "o", "u", "ea", "ou", "ai", "y", "ee"};
  static const char* codas[] = {"", "", "", "n", "r", "s", "t", "l", "nd", "ng", "ck", "st"};
  std::string w;
  const int syllables = 1 + int(g.below(2)) + (g.below(5) == 0);
  for (int s = 0; s < syllables; ++s) {
    w += onsets[g.below(std::size(onsets))];
    w += vowels[g.below(std::size(vowels))];
    w += codas[g.below(std::size(codas))];
  }
  if (g.below(30) == 0) w += g.below(2) ? "é" : "ü";  // a few accented words
  return w;
}

// Writes `mb` MB (before compression) of C4-style JSON lines to a gzip file.
void make(const std::string& path, double mb, uint64_t seed, size_t distinct) {
  Gen g{std::mt19937_64(seed)};
  std::vector<std::string> vocab;
  std::unordered_set<std::string> seen;
  while (vocab.size() < distinct) {
    std::string w = make_word(g);
    if (seen.insert(w).second) vocab.push_back(std::move(w));
  }
  // Frequent words are short, as in natural language.
  std::stable_sort(vocab.begin(), vocab.end(),
                   [](const std::string& a, const std::string& b) { return a.size() < b.size(); });
  // Zipf (s = 1) over the vocabulary: word k has weight 1/(k+1).
  std::vector<double> cdf(vocab.size());
  double sum = 0;
  for (size_t k = 0; k < vocab.size(); ++k) cdf[k] = sum += 1.0 / double(k + 1);
  auto word = [&]() -> const std::string& {
    const double u = g.unit() * sum;
    return vocab[std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin()];
  };
  gzFile f = gzopen(path.c_str(), "wb6");
  if (!f) throw std::runtime_error("cannot write " + path);
  std::string line, text;
  size_t written = 0;
  int64_t docs = 0;
  while (double(written) < mb * 1e6) {
    text.clear();
    const int paragraphs = 1 + int(g.below(8));
    for (int p = 0; p < paragraphs; ++p) {
      if (p) text += '\n';
      const int sentences = 1 + int(g.below(6));
      for (int s = 0; s < sentences; ++s) {
        if (s) text += ' ';
        const int words = 4 + int(g.below(24));
        const bool quoted = g.below(12) == 0;
        if (quoted) text += "“";
        for (int k = 0; k < words; ++k) {
          if (k) text += g.below(12) == 0 ? ", " : g.below(60) == 0 ? " — " : " ";
          std::string w = g.below(40) == 0 ? std::to_string(g.below(2030)) : word();
          if (k == 0 && !w.empty() && w[0] >= 'a' && w[0] <= 'z') w[0] = char(w[0] - 32);
          text += w;
          if (g.below(80) == 0) text += "’s";
        }
        text += ".?!"[g.below(10) < 8 ? 0 : 1 + g.below(2)];
        if (quoted) text += "”";
      }
    }
    line = "{\"text\":\"";
    for (const char c : text) {
      if (c == '"' || c == '\\')
        line += '\\', line += c;
      else if (c == '\n')
        line += "\\n";
      else
        line += c;
    }
    char meta[160];
    std::snprintf(meta, sizeof meta,
                  "\",\"timestamp\":\"2019-04-%02dT%02d:%02d:%02dZ\",\"url\":\"https://www.",
                  int(18 + g.below(9)), int(g.below(24)), int(g.below(60)), int(g.below(60)));
    line += meta;
    line += word() + word() + ".com/" + word() + "/" + word() + "-" + word() + ".html\"}\n";
    if (gzwrite(f, line.data(), unsigned(line.size())) != int(line.size()))
      throw std::runtime_error("write failed: " + path);
    written += line.size();
    ++docs;
  }
  gzclose(f);
  std::printf("%s: %lld documents, %.1f MB of JSON lines, %.1f MB gzipped\n", path.c_str(),
              (long long)docs, double(written) / 1e6,
              double(std::filesystem::file_size(path)) / 1e6);
}

void run(const std::vector<std::string>& files, const std::string& tokenizer, int threads,
         const std::string& cache_dir) {
  const hs::Tokenizer tok = hs::Tokenizer::from_file(tokenizer);
  // The reading stages on one thread: what the reader costs before the threads share the rest.
  for (const bool parse : {false, true}) {
    const auto t0 = Clock::now();
    hs::CorpusReader reader(hs::corpus_files(files));
    hs::RawBatch batch;
    std::string storage;
    size_t raw = 0, text = 0;
    while (reader.next(batch, size_t(8) << 20))
      for (const auto& d : batch.docs) {
        raw += d.size;
        if (parse)
          text += hs::document_text(batch, d, reader.files()[d.file], "text", storage).size();
      }
    const double s = since(t0);
    std::printf("%-32s 1 thread: %6.2f s, %7.1f MB/s of lines",
                parse ? "+ JSON (document_text)" : "gunzip + lines", s, double(raw) / 1e6 / s);
    if (parse) std::printf(", %.1f MB/s of text", double(text) / 1e6 / s);
    std::printf("\n");
  }
  hs::CorpusOptions o;
  o.threads = threads;
  const auto t0 = Clock::now();
  const double cpu0 = cpu_seconds();
  int64_t tokens = 0;
  hs::CorpusStats st;
  if (cache_dir.empty()) {
    st = hs::tokenize_corpus(files, tok, 2, o,
                             [&](std::span<const int32_t> ids) { tokens += int64_t(ids.size()); });
  } else {
    const auto cache = hs::TokenCache::create(cache_dir + "/corpus.tokens", files, tok, 2, o,
                                              hs::token_source(files, o, tok, 2));
    st.bytes = cache.description()["stats"]["bytes"];
    st.documents = cache.description()["stats"]["documents"];
    tokens = int64_t(cache.tokens().size());
  }
  const double s = since(t0), cpu = cpu_seconds() - cpu0;
  std::printf(
      "tokenize_corpus %d thread%s%s: %.2f s, %lld documents, %.2f M tokens, %.1f MB of "
      "text: %.1f MB/s, %.2f M tokens/s; %.2f CPU s (%.1f MB per CPU s)\n",
      threads, threads == 1 ? "" : "s", cache_dir.empty() ? "" : " (into the cache)", s,
      (long long)st.documents, double(tokens) / 1e6, double(st.bytes) / 1e6,
      double(st.bytes) / 1e6 / s, double(tokens) / 1e6 / s, cpu, double(st.bytes) / 1e6 / cpu);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("corpus tokenizing throughput");
  app.require_subcommand(1);
  std::string out, tokenizer = std::string(HS_TEST_DATA) + "/golden/tokenizer/tokenizer.json",
                   cache;
  double mb = 120;
  uint64_t seed = 0;
  size_t words = 50000;
  int threads = 2;
  std::vector<std::string> files;
  auto* mk = app.add_subcommand("make", "write a C4-style .json.gz");
  mk->add_option("FILE", out)->required();
  mk->add_option("--mb", mb, "MB of JSON lines before compression")->capture_default_str();
  mk->add_option("--seed", seed)->capture_default_str();
  mk->add_option("--words", words, "distinct words of the Zipfian vocabulary")
      ->capture_default_str();
  auto* rn = app.add_subcommand("run", "time reading and tokenizing");
  rn->add_option("FILE", files)->required();
  rn->add_option("--tokenizer", tokenizer)->capture_default_str();
  rn->add_option("--threads", threads)->capture_default_str();
  rn->add_option("--cache", cache, "folder for the token cache (default: not written)");
  CLI11_PARSE(app, argc, argv);
  try {
    if (mk->parsed()) make(out, mb, seed, words);
    if (rn->parsed()) run(files, tokenizer, threads, cache);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_corpus: %s\n", e.what());
    return 1;
  }
  return 0;
}
