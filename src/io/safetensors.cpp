#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "util/error.h"

namespace hs {

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string r = "[";
  for (size_t i = 0; i < shape.size(); ++i) r += (i ? ", " : "") + std::to_string(shape[i]);
  return r + "]";
}

std::string printable(const std::string& name) {
  std::string r = name;
  for (char& c : r)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return r;
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path, "not a regular file");
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {  // mmap rejects length 0; an empty file fails the caller's size checks
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw Error(path, std::string("cannot map: ") + std::strerror(err));
    }
    data_ = static_cast<std::byte*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

void MappedFile::release(const void* p, size_t n) const {
  const auto lo = reinterpret_cast<uintptr_t>(data_), hi = lo + size_;
  const auto b = reinterpret_cast<uintptr_t>(p);
  if (!data_ || n == 0 || b < lo || b >= hi) return;  // not in this mapping: nothing of ours
  const uintptr_t e = b + std::min<uintptr_t>(n, hi - b);
  // Rounded outwards to whole pages (the mapping starts on one): the mapping is read-only, so
  // a neighbour's page that goes too is simply faulted in again from the page cache.
  const auto page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t pb = b / page * page, pe = std::min(hi, (e + page - 1) / page * page);
  ::madvise(reinterpret_cast<void*>(pb), pe - pb, MADV_DONTNEED);
}

namespace {

// Larger headers are not safetensors files (a 176B model's header is a few hundred KB).
constexpr uint64_t kMaxHeader = uint64_t(100) << 20;

// A JSON value as a non-negative integer (nlohmann parses those as unsigned, "-0" as signed).
std::optional<uint64_t> as_count(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return uint64_t(v.get<int64_t>());
  return std::nullopt;
}

// Bytes of a tensor, or nullopt when that, or the product of its non-zero dimensions (which
// code indexing rows computes), does not fit in 63 bits.
std::optional<uint64_t> byte_size(DType dt, const std::vector<int64_t>& shape) {
  uint64_t nonzero = dtype_size(dt);
  bool empty = false;
  for (int64_t s : shape) {
    if (s < 0) return std::nullopt;
    if (s == 0) empty = true;
    if (s > 0 &&
        (__builtin_mul_overflow(nonzero, uint64_t(s), &nonzero) || nonzero > uint64_t(INT64_MAX)))
      return std::nullopt;
  }
  return empty ? 0 : nonzero;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path)
    : file_(std::make_unique<MappedFile>(path)) {
  const size_t size = file_->size();
  if (size < 8)
    throw Error(path, "not a safetensors file (" + std::to_string(size) +
                          " bytes, shorter than the 8-byte header length)");
  uint64_t hlen = 0;
  std::memcpy(&hlen, file_->data(), 8);  // little-endian, as is every machine we run on
  if (hlen > kMaxHeader)
    throw Error(path, "header length " + std::to_string(hlen) +
                          " is absurd (over 100 MB; not a safetensors file?)");
  if (hlen > size - 8)
    throw Error(path, "header length " + std::to_string(hlen) + " exceeds the file size " +
                          std::to_string(size) + " (truncated or not a safetensors file)");
  const char* h = reinterpret_cast<const char*>(file_->data()) + 8;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(h, h + hlen);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(path, "header is not valid JSON (at byte " + std::to_string(e.byte) + ")");
  } catch (const nlohmann::json::out_of_range&) {
    // The parser reports a number beyond a double (1e400) as out_of_range, not a parse_error.
    throw Error(path, "header is not valid JSON (a number out of range)");
  }
  if (!j.is_object()) throw Error(path, "header is not a JSON object");

  const std::byte* base = file_->data() + 8 + hlen;
  const uint64_t data_size = size - 8 - hlen;
  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (const auto& [name, e] : j.items()) {
    if (name == "__metadata__") {
      if (!e.is_object()) throw Error(path, "__metadata__ is not an object");
      for (const auto& [k, v] : e.items()) {
        if (!v.is_string())
          throw Error(path, "__metadata__ value of '" + printable(k) + "' is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + printable(name) + "': ";
    if (!e.is_object()) throw Error(path, where + "entry is not an object");

    const auto dt_it = e.find("dtype");
    if (dt_it == e.end() || !dt_it->is_string())
      throw Error(path, where + "missing dtype (a string)");
    const auto dt = parse_dtype(dt_it->get<std::string>());
    if (!dt)
      throw Error(path, where + "unknown dtype '" + printable(dt_it->get<std::string>()) + "'");

    TensorView t;
    t.name = name;
    t.dtype = *dt;
    t.file = path;
    const auto shape_it = e.find("shape");
    if (shape_it == e.end() || !shape_it->is_array())
      throw Error(path, where + "shape must be an array of non-negative integers");
    for (const auto& s : *shape_it) {
      const auto v = as_count(s);
      if (!v) throw Error(path, where + "shape must be an array of non-negative integers");
      if (*v > uint64_t(INT64_MAX)) throw Error(path, where + "shape is too large");
      t.shape.push_back(int64_t(*v));
    }
    const auto bytes = byte_size(t.dtype, t.shape);
    if (!bytes) throw Error(path, where + "shape " + shape_str(t.shape) + " is too large");

    const auto off_it = e.find("data_offsets");
    std::optional<uint64_t> b, en;
    if (off_it != e.end() && off_it->is_array() && off_it->size() == 2)
      b = as_count((*off_it)[0]), en = as_count((*off_it)[1]);
    if (!b || !en) throw Error(path, where + "data_offsets must be two non-negative integers");
    if (*b > *en)
      throw Error(path, where + "data_offsets begin " + std::to_string(*b) + " > end " +
                            std::to_string(*en));
    if (*en > data_size)
      throw Error(path, where + "data ends at byte " + std::to_string(*en) +
                            " but the data section has only " + std::to_string(data_size) +
                            " (truncated file?)");
    if (*bytes != *en - *b)
      throw Error(path, where + "shape " + shape_str(t.shape) + " of " + dtype_name(t.dtype) +
                            " needs " + std::to_string(*bytes) + " bytes but data_offsets span " +
                            std::to_string(*en - *b));
    t.data = base + *b;
    t.nbytes = size_t(*bytes);
    const auto it = tensors_.emplace(name, std::move(t)).first;
    if (*bytes > 0) spans.push_back({*b, *en, &it->first});
  }
  std::sort(spans.begin(), spans.end(),
            [](const Span& x, const Span& y) { return x.begin < y.begin; });
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].begin < spans[i - 1].end)
      throw Error(path, "tensors '" + printable(*spans[i - 1].name) + "' and '" +
                            printable(*spans[i].name) + "' overlap in the data section");
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

namespace {

void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw Error(path, std::string("write failed: ") + std::strerror(errno));
    p += w;
    n -= size_t(w);
  }
}

// Unique per process and writer, so two writers of one path never share a temp file.
std::string temp_path(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

}  // namespace

SafetensorsWriter::SafetensorsWriter(const std::string& path, const std::vector<Entry>& entries,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path), tmp_(temp_path(path)) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::set<std::string> seen;
  uint64_t off = 0;
  for (const Entry& e : entries) {
    if (e.name == "__metadata__" || !seen.insert(e.name).second)
      throw Error(path, "tensor '" + printable(e.name) + "': duplicate or reserved name");
    const auto n = byte_size(e.dtype, e.shape);
    uint64_t end = 0;
    if (!n || __builtin_add_overflow(off, *n, &end))
      throw Error(path, "tensor '" + printable(e.name) + "': invalid shape " + shape_str(e.shape));
    h[e.name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {off, end}}};
    off = end;
  }
  expected_ = off;
  std::string header;
  try {
    header = h.dump();
  } catch (const nlohmann::json::exception&) {
    throw Error(path, "tensor names and metadata must be valid UTF-8");
  }
  header.append((8 - header.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(path, "cannot create " + tmp_ + ": " + std::strerror(errno));
  const uint64_t len = header.size();
  try {
    write_all(fd_, &len, 8, path_);
    write_all(fd_, header.data(), header.size(), path_);
  } catch (...) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
    throw;
  }
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void SafetensorsWriter::append(const void* data, size_t nbytes) {
  if (fd_ < 0) throw Error(path_, "append after commit");
  if (nbytes > expected_ - written_)
    throw Error(path_, "more tensor data than the header declares (" +
                           std::to_string(written_ + nbytes) + " > " + std::to_string(expected_) +
                           " bytes)");
  write_all(fd_, data, nbytes, path_);
  written_ += nbytes;
}

void SafetensorsWriter::commit() {
  if (fd_ < 0) throw Error(path_, "commit called twice");
  if (written_ != expected_)
    throw Error(path_, "only " + std::to_string(written_) + " of " + std::to_string(expected_) +
                           " bytes of tensor data were written");
  if (::fsync(fd_) != 0) throw Error(path_, std::string("fsync failed: ") + std::strerror(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0 || ::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw Error(path_,
                std::string("cannot move the written file into place: ") + std::strerror(err));
  }
  // The new name is durable only once the directory is synced. A failure here is not reported:
  // the file is complete and in place, and there is nothing left to undo.
  const std::string dir = std::filesystem::path(path_).parent_path().string();
  const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsWriter::Entry> entries;
  for (const auto& t : tensors) {
    const auto n = byte_size(t.dtype, t.shape);
    if (n && *n != t.nbytes)
      throw Error(path, "tensor '" + printable(t.name) + "': " + std::to_string(t.nbytes) +
                            " bytes given, its shape and dtype need " + std::to_string(*n));
    entries.push_back({t.name, t.dtype, t.shape});
  }
  SafetensorsWriter w(path, entries, metadata);
  for (const auto& t : tensors) w.append(t.data, t.nbytes);
  w.commit();
}

}  // namespace hs
