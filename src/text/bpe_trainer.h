// Learning a byte-level BPE vocabulary with BLOOM's tokenizer pipeline, so a small model trained
// from scratch (the demo model) has a tokenizer.json that headsurgeon and HF tokenizers both read.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace hs {

struct BpeTrainOptions {
  int64_t vocab_size = 2048;  // including the 4 special tokens and the 256 bytes
  int64_t min_frequency = 2;  // a pair seen fewer times is never merged
};

// A complete tokenizer.json: BLOOM's Split regex + ByteLevel pre-tokenizer, ByteLevel decoder,
// <unk> <s> </s> <pad> as ids 0-3, the 256 byte symbols, then one token per merge. Merges are
// learned as HF's BpeTrainer does: repeatedly merge the most frequent adjacent pair within the
// pre-tokenizer's words (ties: the pair whose token strings sort first, so runs are
// reproducible). Texts must be valid UTF-8.
nlohmann::json train_bpe(const std::vector<std::string>& texts, const BpeTrainOptions& o);

}  // namespace hs
