#include "text/corpus.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <future>
#include <random>

#include "text/corpus_reader.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/interrupt.h"

namespace hs {

namespace fs = std::filesystem;

namespace {

// Raw bytes per batch: thousands of C4 documents for the threads to share, a few MB held.
constexpr size_t kBatchBytes = size_t(8) << 20;

// "123456" or "58.09 M": progress lines stay short at any size.
std::string count_text(int64_t n) {
  if (n < 1000000) return std::to_string(n);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f M", double(n) / 1e6);
  return buf;
}

}  // namespace

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

void for_each_document(const std::vector<std::string>& paths, const std::string& text_field,
                       const std::function<void(std::string_view)>& fn) {
  CorpusReader reader(corpus_files(paths));
  RawBatch batch;
  std::string storage;
  while (reader.next(batch, kBatchBytes))
    for (const RawDocument& d : batch.docs) {
      if (!d.failure.empty()) throw Error(d.failure);
      fn(document_text(batch, d, reader.files()[d.file], text_field, storage));
    }
}

CorpusStats tokenize_corpus(const std::vector<std::string>& paths, const Tokenizer& tok,
                            int64_t eos, const CorpusOptions& o,
                            const std::function<void(std::span<const int32_t>)>& sink) {
  const auto t0 = std::chrono::steady_clock::now();
  CorpusReader reader(corpus_files(paths));
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  auto plural = [](int64_t n) { return n == 1 ? "" : "s"; };
  if (o.progress)
    std::fprintf(stderr, "corpus: tokenizing %zu file%s (%.1f MB) on %d thread%s\n",
                 reader.files().size(), plural(int64_t(reader.files().size())),
                 double(reader.total_bytes()) / 1e6, threads, plural(threads));

  CorpusStats st;
  const int32_t eos_id = int32_t(eos);
  auto emit = [&](std::span<const int32_t> ids) {
    if (o.max_tokens > 0 && st.tokens + int64_t(ids.size()) >= o.max_tokens) {
      ids = ids.first(size_t(o.max_tokens - st.tokens));
      st.truncated = true;
    }
    if (!ids.empty()) sink(ids);
    st.tokens += int64_t(ids.size());
  };
  auto rate = [&] { return double(st.bytes) / 1e6 / std::max(seconds_since(t0), 1e-9); };

  // A document's tokens, or why it has none. Each thread fills the slots it takes; the stream
  // is then assembled in document order, so it does not depend on the threads.
  struct Encoded {
    std::vector<int32_t> ids;
    size_t bytes = 0;
    std::exception_ptr error;
  };
  std::vector<Encoded> enc;
  RawBatch batch, ahead;
  auto last_print = t0;
  for (bool more = reader.next(batch, kBatchBytes); more && !st.truncated; batch.swap(ahead)) {
    // The reader (gunzip, line splitting) is serial: it reads the next batch on a thread of its
    // own while this one is tokenized, or the tokenizing threads would wait for it. Leaving the
    // loop early, the future's destructor waits for that read to end.
    auto next = std::async(std::launch::async, [&] { return reader.next(ahead, kBatchBytes); });
    enc.assign(batch.docs.size(), Encoded{});
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (size_t i = 0; i < batch.docs.size(); ++i) {
      const RawDocument& d = batch.docs[i];
      if (interrupted() || !d.failure.empty()) continue;  // exceptions must not leave the region
      try {
        std::string storage;
        const std::string_view text =
            document_text(batch, d, reader.files()[d.file], o.text_field, storage);
        enc[i].bytes = text.size();
        if (!text.empty()) enc[i].ids = tok.encode(text);
      } catch (...) {
        enc[i].error = std::current_exception();
      }
    }
    check_interrupted();
    for (size_t i = 0; i < batch.docs.size() && !st.truncated; ++i) {
      if (!batch.docs[i].failure.empty()) throw Error(batch.docs[i].failure);
      if (enc[i].error) std::rethrow_exception(enc[i].error);
      if (enc[i].bytes == 0) continue;
      ++st.documents;
      st.bytes += int64_t(enc[i].bytes);
      if (st.tokens > 0) emit({&eos_id, 1});
      if (!st.truncated) emit(enc[i].ids);
    }
    more = next.get();
    if (o.progress && seconds_since(last_print) >= 2.0) {
      last_print = std::chrono::steady_clock::now();
      std::fprintf(stderr, "corpus: %.1f of %.1f MB read, %s tokens, %.1f MB/s\n",
                   double(reader.bytes_read()) / 1e6, double(reader.total_bytes()) / 1e6,
                   count_text(st.tokens).c_str(), rate());
    }
  }
  if (o.progress)
    std::fprintf(stderr,
                 "corpus: %lld document%s, %s tokens from %.1f MB of text in %.1f s (%.1f MB/s "
                 "on %d thread%s)%s\n",
                 (long long)st.documents, plural(st.documents), count_text(st.tokens).c_str(),
                 double(st.bytes) / 1e6, seconds_since(t0), rate(), threads, plural(threads),
                 st.truncated ? ", stopped at --max-tokens" : "");
  return st;
}

Chunks::Chunks(std::span<const int32_t> stream, int seq, const std::string& where)
    : stream_(stream), seq_(seq), count_(stream.size() / size_t(seq)) {
  if (stream.empty()) throw Error(where, "the corpus is empty");
  if (int64_t(stream.size()) < seq)
    throw Error(where, "the corpus has " + std::to_string(stream.size()) +
                           " tokens, fewer than one chunk of --seq " + std::to_string(seq));
}

std::vector<size_t> epoch_order(size_t n, uint64_t seed, int64_t epoch) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + uint64_t(epoch) + 1);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  return order;
}

}  // namespace hs
