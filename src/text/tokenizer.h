// Byte-level BPE tokenizer reading a Hugging Face tokenizer.json, reproducing HF tokenizers on
// BLOOM's pipeline exactly: added tokens matched in the raw text first, then the pre-tokenizer
// (Split on a regex, behaviour Isolated; ByteLevel), then BPE merges by rank. No BOS/EOS added.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hs {

class Tokenizer {
 public:
  // Throws hs::Error("PATH: problem") for a missing file, bad JSON, a model that is not BPE,
  // a pre-tokenizer or decoder we do not implement, or a regex that does not compile.
  static Tokenizer from_file(const std::string& path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Throws hs::Error("invalid UTF-8 at byte N") when text is not valid UTF-8.
  std::vector<int32_t> encode(std::string_view text) const;
  // Special tokens are kept (as HF's decode does by default) unless skip_special.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  size_t vocab_size() const;  // including added tokens

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hs
