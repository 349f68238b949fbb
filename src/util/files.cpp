#include "util/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace hs {

size_t first_invalid_utf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    // Most text is ASCII: skip it eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    const unsigned char c = s[i];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > n) return i;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
    for (int k = 1; k < len; ++k) {
      const unsigned char cc = s[i + k];
      if ((cc >> 6) != 2) return i;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Overlong forms, surrogates and values past U+10FFFF are invalid too.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
      return i;
    i += len;
  }
  return std::string::npos;
}

std::string read_file(const std::string& path, bool utf8) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(path, "is a directory, expected a file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "cannot open file");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  if (utf8) {
    const size_t bad = first_invalid_utf8(s);
    if (bad != std::string::npos) throw Error(path, "invalid UTF-8 at byte " + std::to_string(bad));
  }
  return s;
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, "cannot open file");
  try {
    return nlohmann::json::parse(f);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(path, "not valid JSON (at byte " + std::to_string(e.byte) + ")");
  } catch (const nlohmann::json::out_of_range&) {
    // A number beyond a double (1e400) is reported by the parser as out_of_range, not a
    // parse_error; without this it escaped as an unexpected exception (found by fuzz_config).
    throw Error(path, "not valid JSON (a number out of range)");
  }
}

std::vector<std::string> read_nonblank_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::istringstream in(read_file(path, true));
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(line);
  return lines;
}

namespace {

// The name of a directory entry is durable once the directory is synced. A failure is not
// reported: the data is complete and in place, there is nothing left to undo.
void sync_parent(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Written with open(2)/write(2), whose errors (ENOSPC, EFBIG, EIO) come back from each call.
bool write_fd(const std::string& path, const std::string& content, int* err) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    *err = errno;
    return false;
  }
  const char* p = content.data();
  size_t n = content.size();
  bool ok = true;
  while (ok && n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      *err = w < 0 ? errno : EIO;
      ok = false;
      break;
    }
    p += w;
    n -= size_t(w);
  }
  if (ok && ::fsync(fd) != 0) *err = errno, ok = false;
  if (::close(fd) != 0 && ok) *err = errno, ok = false;
  return ok;
}

// "PATH.tmp-PID" or "PATH.old-PID" (write_dir_atomic, write_file_atomic, save_state) and
// "PATH.tmp-PID-N" (SafetensorsWriter): the PATH, or "" for any other name.
std::string temporary_of(const std::string& name) {
  for (const char* tag : {".tmp-", ".old-"}) {
    const size_t at = name.rfind(tag);
    if (at == std::string::npos || at == 0) continue;
    const std::string rest = name.substr(at + 5);
    if (!rest.empty() && rest.find_first_not_of("0123456789-") == std::string::npos)
      return name.substr(0, at);
  }
  return "";
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& content) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (std::filesystem::exists(st) && !std::filesystem::is_regular_file(st)) {
    std::ofstream f(path, std::ios::binary);
    if (!(f << content) || !f.flush()) throw Error(path, "write failed");
    return;
  }
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  int err = 0;
  if (!write_fd(tmp, content, &err)) {
    ::unlink(tmp.c_str());
    throw Error(path, std::string("write failed: ") + std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    throw Error(path, std::string("cannot replace file: ") + std::strerror(err));
  }
  sync_parent(path);
}

void write_dir_atomic(const std::string& dir, const std::function<void(const std::string&)>& fill) {
  namespace fs = std::filesystem;
  const std::string tmp = dir + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec) && ec) throw Error(dir, "cannot create: " + ec.message());
  try {
    fill(tmp);
  } catch (const Error& e) {
    fs::remove_all(tmp, ec);
    // Name the file as the user will look for it, not inside the temporary directory.
    std::string what = e.what();
    if (what.rfind(tmp, 0) == 0) what = dir + what.substr(tmp.size());
    throw Error(what);
  } catch (const std::exception& e) {
    fs::remove_all(tmp, ec);
    throw Error(dir, std::string("cannot write: ") + e.what());
  }
  // One atomic exchange where the filesystem has it: there is no moment without a whole DIR.
  // Elsewhere two renames, and recover_interrupted_writes puts DIR.old-PID back after a crash
  // between them.
  if (!fs::exists(dir)) {
    if (::rename(tmp.c_str(), dir.c_str()) != 0) {
      const int err = errno;
      fs::remove_all(tmp, ec);
      throw Error(dir, std::string("cannot move into place: ") + std::strerror(err));
    }
  } else if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(tmp, ec);  // now the previous DIR
  } else {
    const std::string old = dir + ".old-" + std::to_string(::getpid());
    if (::rename(dir.c_str(), old.c_str()) != 0 || ::rename(tmp.c_str(), dir.c_str()) != 0) {
      const int err = errno;
      fs::remove_all(tmp, ec);
      throw Error(dir, std::string("cannot replace: ") + std::strerror(err));
    }
    fs::remove_all(old, ec);
  }
  sync_parent(dir);
}

int recover_interrupted_writes(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> found;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    const std::string target = temporary_of(it->path().filename().string());
    if (target.empty()) continue;
    found.push_back(it->path());
    it.disable_recursion_pending();  // a temporary's insides go with it
  }
  int n = 0;
  for (const fs::path& p : found) {
    const fs::path target = p.parent_path() / temporary_of(p.filename().string());
    // A crash between write_dir_atomic's two renames leaves DIR.old-PID and no DIR: the old
    // one is complete, and is DIR again. Every other temporary is an unfinished write.
    if (p.filename().string().find(".old-") != std::string::npos && !fs::exists(target, ec))
      fs::rename(p, target, ec);
    else
      fs::remove_all(p, ec);
    ++n;
  }
  return n;
}

}  // namespace hs
