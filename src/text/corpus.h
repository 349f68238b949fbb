// Training text: corpus paths to files, files to one token stream, the stream to fixed-length
// chunks, and the per-epoch shuffle. Shared by repair and pretrain.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace hs {

// Every regular file under the given paths, folders walked recursively in sorted order.
// Errors name a path that does not exist or a folder without files.
std::vector<std::string> corpus_files(const std::vector<std::string>& paths);

// The corpus as one token stream (files joined by eos), cut into non-overlapping seq-token
// chunks. Errors name the corpus when it is empty or shorter than one chunk.
std::vector<std::vector<int32_t>> corpus_chunks(const std::vector<std::string>& paths,
                                                const Tokenizer& tok, int64_t eos, int seq);

// Epoch e's order of n chunks: a Fisher-Yates shuffle seeded from (seed, e), written out
// because std::shuffle's algorithm differs between standard libraries.
std::vector<size_t> epoch_order(size_t n, uint64_t seed, int64_t epoch);

}  // namespace hs
