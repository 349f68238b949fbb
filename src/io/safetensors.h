// Memory-mapped safetensors reader with full header validation, and an atomic writer.
// Format: u64 little-endian header length N, N bytes of JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the raw little-endian data; offsets are relative to the end of the header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/dtype.h"

namespace hs {

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // path of the file holding it, for error messages

  int64_t numel() const;
};

// Read-only mmap of a whole file. Throws hs::Error naming the path.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Drop the pages of [p, p+n) from this process's resident set (the page cache keeps them).
  void release(const void* p, size_t n) const;

 private:
  std::string path_;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// For error messages: "[3, 4]", and a name read from a file with control characters replaced by
// '?' so that the message stays on one line.
std::string shape_str(const std::vector<int64_t>& shape);
std::string printable(const std::string& name);

class SafetensorsFile {
 public:
  // Maps and validates: header length within the file, JSON object, known dtypes, shapes of
  // non-negative ints, offsets inside the data section, shape x dtype size == byte span, no
  // two tensors overlapping. Every failure throws hs::Error("PATH: problem").
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return file_->path(); }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  void release(const TensorView& t) const { file_->release(t.data, t.nbytes); }

 private:
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Streaming writer for files larger than memory: declare every tensor first (the header is
// written at once), then append each tensor's bytes in declaration order, then commit(). The
// data goes to PATH.tmp-PID-N; commit() fsyncs and renames it over PATH and fsyncs the directory.
// Destroyed without commit() (an error), the temp file is removed; PATH is never half-written,
// even when the process is killed.
class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  SafetensorsWriter(const std::string& path, const std::vector<Entry>& entries,
                    const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Bytes of the next tensor (may be called several times per tensor, in order).
  void append(const void* data, size_t nbytes);
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  size_t expected_ = 0, written_ = 0;
};

// Writes PATH atomically with a SafetensorsWriter: PATH.tmp-PID-N, fsync, rename, fsync of the
// directory. Tensors are laid out in the given order, the header padded with spaces to a
// multiple of 8 bytes (so the data of fp32 tensors stays aligned when mapped).
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace hs
