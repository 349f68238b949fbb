#include "text/corpus.h"

#include <algorithm>
#include <filesystem>
#include <random>

#include "util/error.h"
#include "util/files.h"
#include "util/interrupt.h"

namespace hs {

namespace fs = std::filesystem;

std::vector<std::string> corpus_files(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> found;
      for (const auto& e : fs::recursive_directory_iterator(p, ec))
        if (e.is_regular_file()) found.push_back(e.path().string());
      std::sort(found.begin(), found.end());
      if (found.empty()) throw Error(p, "corpus folder holds no files");
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(p, ec)) {
      files.push_back(p);
    } else {
      throw Error(p, "corpus path does not exist");
    }
  }
  return files;
}

std::vector<std::vector<int32_t>> corpus_chunks(const std::vector<std::string>& paths,
                                                const Tokenizer& tok, int64_t eos, int seq) {
  std::vector<int32_t> stream;
  for (const auto& f : corpus_files(paths)) {
    check_interrupted();
    const std::string text = read_file(f, true);
    if (text.empty()) continue;
    if (!stream.empty()) stream.push_back(int32_t(eos));
    const auto ids = tok.encode(text);
    stream.insert(stream.end(), ids.begin(), ids.end());
  }
  const std::string where = paths.size() == 1 ? paths[0] : "corpus";
  if (stream.empty()) throw Error(where, "the corpus is empty");
  if (int64_t(stream.size()) < seq)
    throw Error(where, "the corpus has " + std::to_string(stream.size()) +
                           " tokens, fewer than one chunk of --seq " + std::to_string(seq));
  std::vector<std::vector<int32_t>> chunks;
  for (size_t p = 0; p + size_t(seq) <= stream.size(); p += size_t(seq))
    chunks.emplace_back(stream.begin() + p, stream.begin() + p + seq);
  return chunks;
}

std::vector<size_t> epoch_order(size_t n, uint64_t seed, int64_t epoch) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + uint64_t(epoch) + 1);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  return order;
}

}  // namespace hs
