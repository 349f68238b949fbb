// Byte-level BPE tokenizer reading a Hugging Face tokenizer.json, reproducing HF tokenizers on
// BLOOM's, GPT-NeoX-20B's and GPT-2's pipelines exactly: added tokens with normalized: false
// matched in the raw text first, the rest NFC-normalized (when the normalizer is NFC), added
// tokens with normalized: true matched in that, then the pre-tokenizer (Splits on a regex,
// behaviour Isolated; ByteLevel, with GPT-2's regex when use_regex), then BPE merges by rank.
// No BOS/EOS added.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hs {

class Tokenizer {
 public:
  // Throws hs::Error("PATH: problem") for a missing file, bad JSON, a model that is not BPE,
  // a normalizer, pre-tokenizer or decoder we do not implement, or a regex that does not compile.
  static Tokenizer from_file(const std::string& path);
  // The same from parsed JSON; errors name `path`.
  static Tokenizer from_json(const nlohmann::json& j, const std::string& path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Throws hs::Error("invalid UTF-8 at byte N") when text is not valid UTF-8, and
  // hs::Interrupted after Ctrl-C (util/interrupt.h), between two words.
  std::vector<int32_t> encode(std::string_view text) const;
  // Special tokens are kept (as HF's decode does by default) unless skip_special.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // The pre-tokenizer's pieces of the normalized text (raw bytes), each a word BPE would merge
  // within: what a vocabulary is trained on. Added tokens are not matched. Throws on invalid
  // UTF-8.
  void for_each_word(std::string_view text, const std::function<void(std::string_view)>& fn) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  size_t vocab_size() const;  // including added tokens

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Bytes as the byte-level alphabet's characters (GPT-2's bytes_to_unicode): how vocabulary
// entries are spelled in tokenizer.json.
std::string byte_level_encode(std::string_view bytes);

}  // namespace hs
