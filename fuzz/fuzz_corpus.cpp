// Corpus files through the golden BLOOM tokenizer, as repair and pretrain read them: the input
// split at the file separator gives the files of a corpus folder (an empty one is an empty
// file). The chunks must be the files' tokens joined by eos, cut into whole --seq chunks.
#include <cstdio>

#include "fuzz_common.h"
#include "text/corpus.h"

using namespace hs;

namespace {
constexpr int kSeq = 8;
constexpr int32_t kEos = 2;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Tokenizer tok =
      Tokenizer::from_file(HS_TEST_DATA "/golden/tokenizer/tokenizer.json");
  const auto files = fuzz::split_files(data, size);
  const fuzz::fs::path dir = fuzz::scratch_dir() / "corpus";
  for (size_t i = 0; i < files.size(); ++i) {
    char name[16];
    std::snprintf(name, sizeof name, "f%04zu.txt", i);  // the folder is read in sorted order
    fuzz::write_file(dir / name, files[i]);
  }
  std::vector<std::vector<int32_t>> chunks;
  fuzz::expect_clean([&] { chunks = corpus_chunks({dir.string()}, tok, kEos, kSeq); });
  if (chunks.empty()) return 0;

  std::vector<int32_t> stream;
  for (std::string_view f : files) {
    if (f.empty()) continue;
    if (!stream.empty()) stream.push_back(kEos);
    const auto ids = tok.encode(f);
    stream.insert(stream.end(), ids.begin(), ids.end());
  }
  if (chunks.size() != stream.size() / kSeq) fuzz::fail("wrong number of chunks");
  for (size_t c = 0; c < chunks.size(); ++c)
    if (chunks[c] !=
        std::vector<int32_t>(stream.begin() + c * kSeq, stream.begin() + (c + 1) * kSeq))
      fuzz::fail("chunk " + std::to_string(c) + " is not the stream's");
  return 0;
}
