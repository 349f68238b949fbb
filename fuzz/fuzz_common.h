// What the fuzz targets share. An input is run against the real loader; hs::Error, the one-line
// error for bad input, is the expected answer, and anything else escaping (another exception
// type ends in std::terminate), a sanitizer report, a hang or a leak is a finding. Targets that
// read files write the input into a folder of their own, emptied for each input.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace hs::fuzz {

namespace fs = std::filesystem;

// Inputs that stand for several files hold them in order, separated by this line (it is in
// each such target's dictionary).
constexpr std::string_view kFileSeparator = "\n--8<--\n";

inline std::vector<std::string_view> split_files(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  size_t from = 0;
  for (size_t at; (at = in.find(kFileSeparator, from)) != std::string_view::npos;
       from = at + kFileSeparator.size())
    parts.push_back(in.substr(from, at - from));
  parts.push_back(in.substr(from));
  return parts;
}

// This process's scratch folder (under $TMPDIR), empty: what one input wrote must not be seen
// by the next. Removed when the process exits normally.
inline fs::path scratch_dir() {
  static const fs::path dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/hs-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    static const fs::path made = tmpl;
    std::atexit([] { fs::remove_all(made); });
    return made;
  }();
  for (const auto& e : fs::directory_iterator(dir)) fs::remove_all(e.path());
  return dir;
}

inline void write_file(const fs::path& path, std::string_view bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

// The whole input as the file `name` in this process's scratch folder, for the targets whose
// input is one file; its path.
inline fs::path input_file(const char* name, const uint8_t* data, size_t size) {
  const fs::path path = scratch_dir() / name;
  write_file(path, {reinterpret_cast<const char*>(data), size});
  return path;
}

// An hs::Error's message is the one line the user sees (error.h): a line break in it, from text
// the file supplied, is a finding too.
inline void check_one_line(const hs::Error& e) {
  if (std::string_view(e.what()).find_first_of("\n\r") != std::string_view::npos) {
    std::fprintf(stderr, "hs::Error message is not one line: %s\n", e.what());
    std::abort();
  }
}

// Runs f; an hs::Error is the clean answer to bad input.
template <class F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const hs::Error& e) {
    check_one_line(e);
  }
}

// A property of a successful parse that did not hold.
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz property violated: %s\n", what.c_str());
  std::abort();
}

}  // namespace hs::fuzz
