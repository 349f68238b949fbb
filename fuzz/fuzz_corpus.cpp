// Corpus files through the golden BLOOM tokenizer, as repair and pretrain read them: the input
// split at the file separator gives the files of a corpus folder. Each part's first byte picks
// its form: a text file, JSON lines, JSON lines gzipped here, or the bytes themselves as a
// gzip file (a damaged stream). Properties: the same stream, or the same first error, on one
// thread and on three; and the stream is the documents' tokens joined by eos.
#include <zlib.h>

#include <cstdio>

#include "fuzz_common.h"
#include "text/corpus.h"

using namespace hs;

namespace {

constexpr int32_t kEos = 2;

std::string gzipped(std::string_view s) {
  z_stream z{};
  deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, uLong(s.size())) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(s.data()));
  z.avail_in = uInt(s.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = uInt(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// The stream, or the error's message.
std::string run(const std::string& dir, const Tokenizer& tok, int threads,
                std::vector<int32_t>& stream) {
  CorpusOptions o;
  o.threads = threads;
  try {
    tokenize_corpus({dir}, tok, kEos, o, [&](std::span<const int32_t> s) {
      stream.insert(stream.end(), s.begin(), s.end());
    });
  } catch (const Error& e) {
    fuzz::check_one_line(e);
    return e.what();
  }
  return "";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Tokenizer tok =
      Tokenizer::from_file(HS_TEST_DATA "/golden/tokenizer/tokenizer.json");
  const auto parts = fuzz::split_files(data, size);
  const fuzz::fs::path dir = fuzz::scratch_dir() / "corpus";
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string_view p = parts[i];
    const int form = p.empty() ? 0 : static_cast<uint8_t>(p[0]) % 4;
    if (!p.empty()) p.remove_prefix(1);
    static const char* ext[] = {".txt", ".jsonl", ".jsonl.gz", ".json.gz"};
    char name[24];
    std::snprintf(name, sizeof name, "f%04zu%s", i, ext[form]);  // read in sorted order
    fuzz::write_file(dir / name, form == 2 ? std::string_view(gzipped(p)) : p);
  }
  std::vector<int32_t> one, three;
  const std::string err1 = run(dir.string(), tok, 1, one);
  const std::string err3 = run(dir.string(), tok, 3, three);
  if (err1 != err3) fuzz::fail("one thread: '" + err1 + "', three: '" + err3 + "'");
  if (!err1.empty()) return 0;
  if (one != three) fuzz::fail("the stream depends on the thread count");

  std::vector<int32_t> stream;
  fuzz::expect_clean([&] {
    for_each_document({dir.string()}, "text", [&](std::string_view doc) {
      if (doc.empty()) return;
      if (!stream.empty()) stream.push_back(kEos);
      const auto ids = tok.encode(doc);
      stream.insert(stream.end(), ids.begin(), ids.end());
    });
  });
  if (stream != one) fuzz::fail("the stream is not the documents' tokens joined by eos");
  return 0;
}
