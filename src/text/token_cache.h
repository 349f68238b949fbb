// A corpus's token stream in a file, memory-mapped: a run tokenizes its corpus once into its run
// directory, and --resume maps the file instead of reading the corpus again. 32-bit ids, so
// 100 M tokens are 400 MB of file pages, which the kernel can drop and re-read under pressure.
//
// Layout: "HSTOKv1\n", the token count and the length of the description (little-endian u64
// each), 8 zero bytes, the ids (int32), then the description: JSON of what was tokenized and
// how (corpus, --text-field, --max-tokens, the tokenizer's size and eos) and the corpus stats.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "text/corpus.h"

namespace hs {

class TokenCache {
 public:
  // Tokenizes the corpus (tokenize_corpus) into PATH, written atomically (PATH.tmp-PID renamed
  // over it; removed when tokenizing fails or is interrupted), and maps it. `source` describes
  // the corpus and settings; it is stored with the stats under "source" and "stats".
  static TokenCache create(const std::string& path, const std::vector<std::string>& corpus,
                           const Tokenizer& tok, int64_t eos, const CorpusOptions& o,
                           const nlohmann::json& source);
  // Maps PATH; errors name it when it is not a whole token cache.
  static TokenCache open(const std::string& path);

  ~TokenCache();
  TokenCache(TokenCache&& other) noexcept;
  TokenCache& operator=(TokenCache&& other) noexcept;

  std::span<const int32_t> tokens() const { return {ids_, size_t(count_)}; }
  const nlohmann::json& description() const { return description_; }
  const std::string& path() const { return path_; }

 private:
  TokenCache() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const int32_t* ids_ = nullptr;
  int64_t count_ = 0;
  nlohmann::json description_;
};

// What a stream of `corpus` tokenized with these options and tokenizer is made of, as the
// cache stores it: the corpus paths made absolute, so a run resumed from another folder matches.
nlohmann::json token_source(const std::vector<std::string>& corpus, const CorpusOptions& o,
                            const Tokenizer& tok, int64_t eos);

// Throws hs::Error naming the cache and the first setting that differs from `expected` (a
// token_source): a resumed run must train on the stream it started with.
void check_token_source(const TokenCache& cache, const nlohmann::json& expected);

}  // namespace hs
