#include "cli/common.h"

#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "util/error.h"
#include "util/files.h"

namespace hs::cli {

void add_corpus_options(CLI::App* sub, std::vector<std::string>& corpus, std::string& text_field,
                        int64_t& max_tokens, const std::string& use) {
  sub->add_option("--corpus", corpus,
                  "UTF-8 text files, JSON lines (.jsonl, .json), either gzipped (.gz), or folders "
                  "of them (repeatable)")
      ->required();
  sub->add_option("--text-field", text_field, "the field of a JSON line that holds its document")
      ->capture_default_str();
  sub->add_option("--max-tokens", max_tokens,
                  use + " the corpus's first N tokens (files in order; 0: all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

void write_output(const std::string& path, const std::string& content) {
  if (path == "-") {
    std::cout << content;
    std::cout.flush();
    return;
  }
  write_file_atomic(path, content);
}

void check_output_path(const std::string& path) {
  if (path.empty() || path == "-") return;
  const auto parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
    throw Error(path, "cannot write: directory " + parent.string() + " does not exist");
  if (std::filesystem::is_directory(path, ec)) throw Error(path, "is a directory");
}

void write_json(const std::string& path, const nlohmann::json& j) {
  write_output(path, j.dump(1) + "\n");
}

void set_threads(int n) {
  if (n <= 0) return;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

namespace {
bool g_offline = false;
}  // namespace

void set_offline(bool on) { g_offline = on; }
bool offline() { return g_offline; }

Progress::Progress(std::string what, bool enabled)
    : what_(std::move(what)),
      enabled_(enabled),
      tty_(::isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

void Progress::update(int64_t done, int64_t total, const std::string& extra) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  // Plain logs get a line every 5 s; a terminal is refreshed at most 10 times a second.
  const double gap = std::chrono::duration<double>(now - last_).count();
  const double el = seconds_since(start_);
  if (done < total && gap < (tty_ ? 0.1 : 5.0)) return;
  if (!tty_ && !printed_ && el < 5.0) return;  // short jobs leave logs clean
  last_ = now;
  const double eta = done > 0 ? el * double(total - done) / double(done) : 0;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s %lld/%lld (%.0f%%) elapsed %.1fs ETA %.1fs", what_.c_str(),
                (long long)done, (long long)total,
                total ? 100.0 * double(done) / double(total) : 100.0, el, eta);
  std::string line = buf;
  if (!extra.empty()) line += " " + extra;
  if (tty_)
    std::cerr << "\r\033[K" << line << std::flush;
  else
    std::cerr << line << "\n";
  printed_ = true;
}

void Progress::finish() {
  if (enabled_ && tty_ && printed_) std::cerr << "\n";
  printed_ = false;
}

}  // namespace hs::cli
