// Reading corpus files as documents. A text file is one document; a JSON-lines file (.jsonl, or
// .json as C4 names its shards) holds one per line, the string under a chosen field; either may
// be gzip-compressed (.gz). The reader only cuts the files into raw documents (a whole text
// file, or one line), in batches: checking and parsing them is left to the caller's threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace hs {

// How a corpus file is read, from its name: ".gz" last means gzip; then ".jsonl" or ".json"
// means JSON lines, anything else text.
struct FileFormat {
  bool json_lines = false;
  bool gzip = false;
};
FileFormat corpus_file_format(const std::string& path);

// One raw document of a batch, or a failure met while reading, at its place in the order (so
// that documents before it are still used, and --max-tokens can end the corpus before it).
struct RawDocument {
  size_t file = 0;      // index into the reader's files
  int64_t line = 0;     // JSON lines: 1-based line number; 0 for a text file
  size_t begin = 0;     // its bytes in the batch's buffer
  size_t size = 0;      //
  std::string failure;  // non-empty: the whole error message ("FILE: problem")
};

struct RawBatch {
  std::string bytes;
  std::vector<RawDocument> docs;
  void swap(RawBatch& other) noexcept {
    bytes.swap(other.bytes);
    docs.swap(other.docs);
  }
  std::string_view view(const RawDocument& d) const { return {bytes.data() + d.begin, d.size}; }
};

class CorpusReader {
 public:
  explicit CorpusReader(std::vector<std::string> files);
  ~CorpusReader();
  CorpusReader(const CorpusReader&) = delete;
  CorpusReader& operator=(const CorpusReader&) = delete;

  // Replaces `batch` by the next documents, about `target` bytes of them (a text file is never
  // split; files are read in blocks of at most `target` bytes); false when every file has been
  // read. Checks for Ctrl-C between reads.
  bool next(RawBatch& batch, size_t target);

  const std::vector<std::string>& files() const { return files_; }
  uint64_t total_bytes() const { return total_bytes_; }  // of the files as stored
  uint64_t bytes_read() const;                           // of those, read so far

 private:
  class Source;
  std::vector<std::string> files_;
  uint64_t total_bytes_ = 0, done_bytes_ = 0;  // done: of the files already closed
  size_t next_file_ = 0;
  std::unique_ptr<Source> src_;  // the file being read
  size_t src_file_ = 0;
  int64_t line_ = 0;   // lines of the current JSON-lines file handed out
  std::string carry_;  // its line cut by the end of the last batch
};

// The document of a raw one (not a failure): a text file's bytes, checked to be UTF-8, or the
// string under `field` of a JSON line, unescaped into `storage`. Throws hs::Error naming the
// file, and for a JSON line its line: "FILE:LINE: problem".
std::string_view document_text(const RawBatch& batch, const RawDocument& d, const std::string& file,
                               const std::string& field, std::string& storage);

}  // namespace hs
