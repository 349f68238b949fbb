// Training text: corpus paths to files, files to documents (text files, JSON lines, gzip: see
// text/corpus_reader.h), documents to one token stream, the stream to fixed-length chunks, and
// the per-epoch shuffle. Shared by repair and pretrain.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/tokenizer.h"

namespace hs {

// Every regular file under the given paths, folders walked recursively in sorted order.
// Errors name a path that does not exist or a folder without files.
std::vector<std::string> corpus_files(const std::vector<std::string>& paths);

struct CorpusOptions {
  std::string text_field = "text";  // the field of a JSON line that holds its document
  int64_t max_tokens = 0;           // stop once the stream has this many tokens; 0 = all
  int threads = 0;                  // 0 = OpenMP's maximum
  bool progress = false;            // progress lines on stderr
};

// Every document of the corpus in order (a text file whole, a JSON line's field), read on this
// thread. Errors as tokenize_corpus's.
void for_each_document(const std::vector<std::string>& paths, const std::string& text_field,
                       const std::function<void(std::string_view)>& fn);

struct CorpusStats {
  int64_t documents = 0;   // non-empty documents used
  int64_t bytes = 0;       // of their text
  int64_t tokens = 0;      // in the stream
  bool truncated = false;  // max_tokens ended it
};

// The corpus as one token stream: each non-empty document tokenized on its own (empty ones are
// skipped, as an empty text file always was), joined by eos, handed to `sink` piece by piece in
// order, stopping at max_tokens. The documents are tokenized on `threads` threads; the stream
// does not depend on their number. Throws hs::Error "FILE: problem" or "FILE:LINE: problem" at
// the first bad document (or unreadable file) before the end, hs::Interrupted after Ctrl-C.
CorpusStats tokenize_corpus(const std::vector<std::string>& paths, const Tokenizer& tok,
                            int64_t eos, const CorpusOptions& o,
                            const std::function<void(std::span<const int32_t>)>& sink);

// A token stream cut into non-overlapping seq-token chunks (views into it; the tail shorter
// than a chunk is unused). Errors name `where` when the stream is empty or shorter than a chunk.
class Chunks {
 public:
  Chunks(std::span<const int32_t> stream, int seq, const std::string& where);
  size_t size() const { return count_; }
  std::span<const int32_t> operator[](size_t i) const {
    return stream_.subspan(i * size_t(seq_), size_t(seq_));
  }
  std::vector<int32_t> copy(size_t i) const {
    const auto c = (*this)[i];
    return {c.begin(), c.end()};
  }

 private:
  std::span<const int32_t> stream_;
  int seq_;
  size_t count_;
};

// Epoch e's order of n chunks: a Fisher-Yates shuffle seeded from (seed, e), written out
// because std::shuffle's algorithm differs between standard libraries.
std::vector<size_t> epoch_order(size_t n, uint64_t seed, int64_t epoch);

}  // namespace hs
