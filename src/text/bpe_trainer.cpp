#include "text/bpe_trainer.h"

#include <algorithm>
#include <unordered_map>

#include "text/tokenizer.h"
#include "util/error.h"
#include "util/interrupt.h"

namespace hs {

namespace {

using json = nlohmann::json;

const char* const kSpecial[] = {"<unk>", "<s>", "</s>", "<pad>"};

// BLOOM's tokenizer.json around an empty model: the pipeline every trained vocabulary shares.
json bloom_pipeline() {
  json added = json::array();
  for (int i = 0; i < 4; ++i)
    added.push_back({{"id", i},
                     {"content", kSpecial[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", " ?[^(\\s|[.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c])]+"}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"},
           {"add_prefix_space", false},
           {"trim_offsets", true},
           {"use_regex", false}}}}}},
      {"post_processor", nullptr},
      {"decoder",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", json::object()},
        {"merges", json::array()}}}};
}

uint64_t pair_key(int32_t a, int32_t b) { return uint64_t(uint32_t(a)) << 32 | uint32_t(b); }

struct Word {
  std::vector<int32_t> sym;
  int64_t count;
};

}  // namespace

json train_bpe(const std::vector<std::string>& texts, const BpeTrainOptions& o) {
  if (o.vocab_size < 4 + 256)
    throw Error("vocabulary size " + std::to_string(o.vocab_size) +
                " is below the 260 special and byte tokens");
  json tj = bloom_pipeline();
  // The pre-tokenizer of the pipeline itself, so training sees exactly the words encoding will.
  const Tokenizer pipeline = [&] {
    json probe = tj;
    for (int i = 0; i < 4; ++i) probe["model"]["vocab"][kSpecial[i]] = i;
    return Tokenizer::from_json(probe, "<BLOOM pipeline>");
  }();

  std::unordered_map<std::string, int64_t> word_counts;
  for (const std::string& t : texts)
    pipeline.for_each_word(t, [&](std::string_view w) { ++word_counts[std::string(w)]; });
  // Sorted, so the merge order does not depend on hash-map iteration.
  std::vector<std::pair<std::string, int64_t>> sorted(word_counts.begin(), word_counts.end());
  std::sort(sorted.begin(), sorted.end());

  std::vector<std::string> token_bytes;  // symbol id -> bytes; symbols 0..255 are the bytes
  std::unordered_map<std::string, int32_t> token_id;
  for (int b = 0; b < 256; ++b) {
    token_bytes.push_back(std::string(1, char(b)));
    token_id[token_bytes.back()] = b;
  }
  std::vector<Word> words;
  for (auto& [w, n] : sorted) {
    Word word{{}, n};
    for (const char c : w) word.sym.push_back(static_cast<unsigned char>(c));
    words.push_back(std::move(word));
  }

  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;  // may hold stale entries
  auto add_pairs = [&](int32_t wi, int64_t sign) {
    const Word& w = words[wi];
    for (size_t i = 0; i + 1 < w.sym.size(); ++i) {
      const uint64_t k = pair_key(w.sym[i], w.sym[i + 1]);
      const int64_t c = pair_count[k] += sign * w.count;
      if (c == 0) pair_count.erase(k);
      if (sign > 0) pair_words[k].push_back(wi);
    }
  };
  for (int32_t wi = 0; wi < int32_t(words.size()); ++wi) add_pairs(wi, +1);

  const int64_t n_merges = o.vocab_size - 4 - 256;
  std::vector<std::pair<int32_t, int32_t>> merges;
  std::vector<int64_t> seen(words.size(), -1);
  for (int64_t m = 0; int64_t(token_bytes.size()) < 256 + n_merges && !pair_count.empty(); ++m) {
    check_interrupted();
    uint64_t best = 0;
    int64_t best_n = -1;
    for (const auto& [k, n] : pair_count) {
      if (n < best_n) continue;
      if (n == best_n) {
        const auto cand = std::tie(token_bytes[k >> 32], token_bytes[k & 0xFFFFFFFF]);
        if (cand >= std::tie(token_bytes[best >> 32], token_bytes[best & 0xFFFFFFFF])) continue;
      }
      best = k;
      best_n = n;
    }
    if (best_n < o.min_frequency) break;
    const int32_t a = int32_t(best >> 32), b = int32_t(best & 0xFFFFFFFF);
    // Two merge paths can spell the same bytes ("ab"+"c", "a"+"bc"): like HF, one token.
    const std::string spelled = token_bytes[a] + token_bytes[b];
    const auto [it, fresh] = token_id.emplace(spelled, int32_t(token_bytes.size()));
    if (fresh) token_bytes.push_back(spelled);
    const int32_t merged = it->second;
    merges.push_back({a, b});
    const std::vector<int32_t> affected = std::move(pair_words[best]);
    pair_words.erase(best);
    for (const int32_t wi : affected) {
      if (seen[wi] == m) continue;
      seen[wi] = m;
      add_pairs(wi, -1);
      std::vector<int32_t>& s = words[wi].sym;
      size_t out = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          s[out++] = merged;
          ++i;
        } else {
          s[out++] = s[i];
        }
      }
      s.resize(out);
      add_pairs(wi, +1);
    }
  }

  json& vocab = tj["model"]["vocab"];
  for (int i = 0; i < 4; ++i) vocab[kSpecial[i]] = i;
  for (size_t id = 0; id < token_bytes.size(); ++id)
    vocab[byte_level_encode(token_bytes[id])] = int64_t(id) + 4;
  json& jm = tj["model"]["merges"];
  for (auto [a, b] : merges)
    jm.push_back({byte_level_encode(token_bytes[a]), byte_level_encode(token_bytes[b])});
  return tj;
}

}  // namespace hs
