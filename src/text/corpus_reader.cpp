#include "text/corpus_reader.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/files.h"
#include "util/interrupt.h"

namespace hs {

namespace {

constexpr size_t kBlock = size_t(1) << 20;  // bytes asked of a file per read

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

}  // namespace

FileFormat corpus_file_format(const std::string& path) {
  std::string_view name = path;
  FileFormat f;
  f.gzip = ends_with(name, ".gz");
  if (f.gzip) name.remove_suffix(3);
  f.json_lines = ends_with(name, ".jsonl") || ends_with(name, ".json");
  return f;
}

// One file's bytes, through zlib when it is gzip-compressed. Concatenated gzip members (pigz,
// bgzip) are one stream, as gzip -d reads them.
class CorpusReader::Source {
 public:
  Source(std::string path, bool gzip) : path_(std::move(path)), gzip_(gzip) {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw Error(path_, "cannot open file");
    if (gzip_) {
      in_.resize(kBlock);
      if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK)  // 16: gzip framing, not zlib's
        throw Error(path_, "cannot start zlib");
    }
  }
  ~Source() {
    if (gzip_) inflateEnd(&zs_);
    ::close(fd_);
  }
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;

  // Appends up to `max` bytes to out; returns how many, 0 at the end of the file.
  size_t read(std::string& out, size_t max) {
    const size_t old = out.size();
    out.resize(old + max);
    const size_t n = gzip_ ? inflate_into(out.data() + old, max) : read_raw(out.data() + old, max);
    out.resize(old + n);
    return n;
  }

  uint64_t consumed() const { return consumed_; }

 private:
  size_t read_raw(char* dst, size_t max) {
    for (;;) {
      const ssize_t n = ::read(fd_, dst, max);
      if (n >= 0) {
        consumed_ += uint64_t(n);
        return size_t(n);
      }
      if (errno != EINTR) throw Error(path_, std::string("cannot read: ") + std::strerror(errno));
    }
  }

  size_t inflate_into(char* dst, size_t max) {
    zs_.next_out = reinterpret_cast<Bytef*>(dst);
    zs_.avail_out = uInt(max);
    while (zs_.avail_out == max) {
      if (zs_.avail_in == 0 && !eof_) {
        const size_t n = read_raw(reinterpret_cast<char*>(in_.data()), in_.size());
        eof_ = n == 0;
        zs_.next_in = in_.data();
        zs_.avail_in = uInt(n);
      }
      if (zs_.avail_in == 0) {
        // The end of the file must be the end of a member, and there must be one.
        if (in_member_ || !any_member_)
          throw Error(path_, "gzip stream truncated at byte " + std::to_string(consumed_));
        break;
      }
      in_member_ = any_member_ = true;
      const int rc = inflate(&zs_, Z_NO_FLUSH);
      if (rc == Z_STREAM_END) {
        in_member_ = false;
        inflateReset(&zs_);
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {  // Z_BUF_ERROR: it needs more input
        throw Error(path_, "corrupt gzip data at byte " + std::to_string(consumed_ - zs_.avail_in) +
                               " (zlib: " + (zs_.msg ? zs_.msg : "error " + std::to_string(rc)) +
                               ")");
      }
    }
    return max - zs_.avail_out;
  }

  std::string path_;
  bool gzip_;
  int fd_ = -1;
  z_stream zs_{};
  std::vector<Bytef> in_;
  bool eof_ = false, in_member_ = false, any_member_ = false;
  uint64_t consumed_ = 0;
};

CorpusReader::CorpusReader(std::vector<std::string> files) : files_(std::move(files)) {
  for (const auto& f : files_) {
    std::error_code ec;
    const auto n = std::filesystem::file_size(f, ec);
    if (!ec) total_bytes_ += n;
  }
}

CorpusReader::~CorpusReader() = default;

uint64_t CorpusReader::bytes_read() const { return done_bytes_ + (src_ ? src_->consumed() : 0); }

bool CorpusReader::next(RawBatch& b, size_t target) {
  b.bytes = std::move(carry_);
  carry_.clear();
  b.docs.clear();
  bool json = src_ && corpus_file_format(files_[src_file_]).json_lines;
  size_t start = 0;              // of the current document (a text file, or a line)
  size_t scan = b.bytes.size();  // the carried part of a line holds no newline
  auto close = [&] {
    done_bytes_ += src_->consumed();
    src_.reset();
  };
  for (;;) {
    if (!src_) {
      if (next_file_ == files_.size() || b.bytes.size() >= target) break;
      src_file_ = next_file_++;
      const FileFormat fmt = corpus_file_format(files_[src_file_]);
      try {
        src_ = std::make_unique<Source>(files_[src_file_], fmt.gzip);
      } catch (const Error& e) {
        b.docs.push_back({src_file_, 0, 0, 0, e.what()});
        continue;
      }
      json = fmt.json_lines;
      line_ = 0;
      start = scan = b.bytes.size();
    }
    // A batch ends between lines; a text file is one document and is read whole.
    if (json && !b.docs.empty() && b.bytes.size() >= target) break;
    check_interrupted();
    size_t n = 0;
    try {
      n = src_->read(b.bytes, std::min(kBlock, target));
    } catch (const Error& e) {
      b.bytes.resize(start);  // the lines before the failure stay; the one it cut does not
      b.docs.push_back({src_file_, 0, 0, 0, e.what()});
      close();
      continue;
    }
    if (!json) {
      if (n == 0) {
        b.docs.push_back({src_file_, 0, start, b.bytes.size() - start, {}});
        close();
      }
      continue;
    }
    for (size_t nl; (nl = b.bytes.find('\n', scan)) != std::string::npos; scan = start) {
      b.docs.push_back({src_file_, ++line_, start, nl - start, {}});
      start = nl + 1;
    }
    scan = b.bytes.size();
    if (n == 0) {
      if (start < b.bytes.size())  // the last line, without a newline
        b.docs.push_back({src_file_, ++line_, start, b.bytes.size() - start, {}});
      close();
    }
  }
  if (src_) {  // a JSON-lines file goes on in the next batch, from the line cut here
    carry_.assign(b.bytes, start);
    b.bytes.resize(start);
  }
  return !b.docs.empty();
}

std::string_view document_text(const RawBatch& batch, const RawDocument& d, const std::string& file,
                               const std::string& field, std::string& storage) {
  const std::string_view raw = batch.view(d);
  if (d.line == 0) {
    const size_t bad = first_invalid_utf8(raw);
    if (bad != std::string_view::npos)
      throw Error(file, "invalid UTF-8 at byte " + std::to_string(bad));
    return raw;
  }
  const std::string where = file + ":" + std::to_string(d.line);
  if (raw.find_first_not_of(" \t\r") == std::string_view::npos)
    throw Error(where, "empty line, expected a JSON object");
  // nlohmann's parser, not a hand-written scan: on C4-style lines it is about an eighth of the
  // CPU time of tokenizing them (bench/NOTES.md), and it runs on every thread.
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(raw);
  } catch (const nlohmann::json::parse_error& e) {
    // The parser rejects bad UTF-8 in strings; the byte is the more useful thing to name.
    const size_t bad = first_invalid_utf8(raw);
    if (bad != std::string_view::npos)
      throw Error(where, "invalid UTF-8 at byte " + std::to_string(bad) + " of the line");
    // e.byte counts from 1; offsets in the line count from 0, as the UTF-8 one does.
    throw Error(where, "not valid JSON (at byte " + std::to_string(e.byte - 1) + " of the line)");
  }
  if (!j.is_object())
    throw Error(where, std::string("a JSON ") + j.type_name() + ", expected an object");
  const auto it = j.find(field);
  if (it == j.end()) throw Error(where, "no field '" + field + "' (--text-field)");
  if (!it->is_string())
    throw Error(where, "field '" + field + "' is " + it->type_name() + ", not a string");
  storage = std::move(it->get_ref<std::string&>());
  return storage;
}

}  // namespace hs
