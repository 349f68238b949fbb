#include "text/token_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "util/error.h"

namespace hs {

namespace {

constexpr char kMagic[8] = {'H', 'S', 'T', 'O', 'K', 'v', '1', '\n'};

struct Header {
  char magic[8];
  uint64_t count, description_bytes, zero;
};
static_assert(sizeof(Header) == 32);

constexpr const char* kDamaged = "not a whole token cache (delete it to tokenize the corpus again)";

// The temporary file of create(): closed, and removed unless it was renamed into place.
struct TempFile {
  std::string path;
  FILE* f = nullptr;
  bool kept = false;
  ~TempFile() {
    if (f) std::fclose(f);
    if (!kept) std::remove(path.c_str());
  }
};

}  // namespace

TokenCache TokenCache::create(const std::string& path, const std::vector<std::string>& corpus,
                              const Tokenizer& tok, int64_t eos, const CorpusOptions& o,
                              const nlohmann::json& source) {
  TempFile tmp{path + ".tmp-" + std::to_string(::getpid())};
  tmp.f = std::fopen(tmp.path.c_str(), "wb");
  if (!tmp.f) throw Error(path, "cannot write file");
  std::setvbuf(tmp.f, nullptr, _IOFBF, size_t(1) << 20);
  auto put = [&](const void* p, size_t n) {
    if (std::fwrite(p, 1, n, tmp.f) != n)
      throw Error(path, std::string("write failed: ") + std::strerror(errno));
  };
  Header h{};
  put(&h, sizeof h);  // the count is known at the end
  const CorpusStats st = tokenize_corpus(corpus, tok, eos, o, [&](std::span<const int32_t> ids) {
    put(ids.data(), ids.size_bytes());
  });
  const std::string description = nlohmann::json{
      {"source", source},
      {"stats",
       {{"documents", st.documents},
        {"bytes", st.bytes},
        {"tokens", st.tokens},
        {"truncated", st.truncated}}}}.dump();
  put(description.data(), description.size());
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.count = uint64_t(st.tokens);
  h.description_bytes = description.size();
  if (std::fseek(tmp.f, 0, SEEK_SET) != 0) throw Error(path, "write failed");
  put(&h, sizeof h);
  const bool flushed = std::fflush(tmp.f) == 0 && ::fsync(fileno(tmp.f)) == 0;
  const bool closed = std::fclose(tmp.f) == 0;
  tmp.f = nullptr;
  if (!flushed || !closed) throw Error(path, "write failed");
  if (std::rename(tmp.path.c_str(), path.c_str()) != 0) throw Error(path, "cannot replace file");
  tmp.kept = true;
  return open(path);
}

TokenCache TokenCache::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path, "cannot open file");
  struct stat sb {};
  const bool sized = ::fstat(fd, &sb) == 0;
  const size_t bytes = sized ? size_t(sb.st_size) : 0;
  if (bytes < sizeof(Header)) {
    ::close(fd);
    throw Error(path, kDamaged);
  }
  void* map = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) throw Error(path, std::string("cannot map file: ") + std::strerror(errno));
  TokenCache c;  // unmaps if a check below throws
  c.path_ = path;
  c.map_ = map;
  c.map_bytes_ = bytes;
  Header h;
  std::memcpy(&h, map, sizeof h);
  const size_t body = bytes - sizeof h;
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.count > body / 4 ||
      h.description_bytes != body - h.count * 4)
    throw Error(path, kDamaged);
  c.ids_ = reinterpret_cast<const int32_t*>(static_cast<const char*>(map) + sizeof h);
  c.count_ = int64_t(h.count);
  const char* desc = reinterpret_cast<const char*>(c.ids_ + h.count);
  try {
    c.description_ = nlohmann::json::parse(desc, desc + h.description_bytes);
  } catch (const nlohmann::json::parse_error&) {
    throw Error(path, kDamaged);
  }
  return c;
}

TokenCache::~TokenCache() {
  if (map_) ::munmap(map_, map_bytes_);
}

TokenCache::TokenCache(TokenCache&& other) noexcept { *this = std::move(other); }

TokenCache& TokenCache::operator=(TokenCache&& other) noexcept {
  if (this != &other) {
    if (map_) ::munmap(map_, map_bytes_);
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    ids_ = std::exchange(other.ids_, nullptr);
    count_ = std::exchange(other.count_, 0);
    description_ = std::move(other.description_);
  }
  return *this;
}

nlohmann::json token_source(const std::vector<std::string>& corpus, const CorpusOptions& o,
                            const Tokenizer& tok, int64_t eos) {
  nlohmann::json paths = nlohmann::json::array();
  for (const auto& p : corpus)
    paths.push_back(std::filesystem::absolute(p).lexically_normal().string());
  return {{"corpus", paths},
          {"text_field", o.text_field},
          {"max_tokens", o.max_tokens},
          {"vocab_size", tok.vocab_size()},
          {"eos", eos}};
}

void check_token_source(const TokenCache& cache, const nlohmann::json& expected) {
  const nlohmann::json source = cache.description().value("source", nlohmann::json::object());
  for (const auto& [key, want] : expected.items()) {
    const nlohmann::json had = source.value(key, nlohmann::json(nullptr));
    if (had == want) continue;
    // The corpus settings are options; the rest comes from the model's tokenizer.
    std::string what = key;
    if (key == "corpus" || key == "text_field" || key == "max_tokens") {
      std::replace(what.begin(), what.end(), '_', '-');
      what = "--" + what;
    } else {
      what = "the tokenizer's " + what;
    }
    throw Error(cache.path(), what + " was " + had.dump() +
                                  " when this run tokenized its corpus, now " + want.dump() +
                                  ": resume with the same settings");
  }
}

}  // namespace hs
