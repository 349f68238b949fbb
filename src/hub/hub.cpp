#include "hub/hub.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "hub/http.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/files.h"
#include "util/interrupt.h"

namespace hs::hub {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kTries = 5;      // tries of a request whose connection fails without progress
constexpr int kRedirects = 5;  // relative redirects followed (a renamed repo)
constexpr int64_t kChunk = 1 << 20;

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  s.erase(0, s.find_first_not_of(" \t\r\n"));
  return s;
}

std::string errno_text() { return std::strerror(errno); }

// SHA-256 from OpenSSL's libcrypto, which libcurl's OpenSSL flavour loads anyway: it uses the
// CPU's SHA extensions (GB/s), so checking a blob as it arrives does not slow a fast download,
// where a portable implementation (a few hundred MB/s) would.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { reset(); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void reset() { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  void update(const char* p, size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_DigestFinal_ex(ctx_, md, &n);
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (unsigned i = 0; i < n; ++i) s += {digits[md[i] >> 4], digits[md[i] & 15]};
    return s;
  }

 private:
  EVP_MD_CTX* ctx_;
};

// An answer worth asking again (the server is busy or failing): 429 and 5xx.
struct Retry : std::runtime_error {
  using std::runtime_error::runtime_error;
};

bool is_hex(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

// Waits 0.5, 1, 2, 4 s after the failed tries 1, 2, 3, 4, stopping early on Ctrl-C or `stop`.
void backoff(int tries, const std::atomic<bool>* stop) {
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(500 << (tries - 1));
  while (std::chrono::steady_clock::now() < until) {
    check_interrupted();
    if (stop && stop->load()) throw Stopped{};
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// An open file descriptor, closed on every path.
struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

// An exclusive flock(2) on PATH, as huggingface_hub takes one (its filelock) on the same file
// under .locks/: two processes never write one blob at once. Waits for the holder.
class FileLock {
 public:
  FileLock(const fs::path& path, const std::atomic<bool>& stop)
      : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_.fd < 0) throw Error(path.string(), "cannot open the lock file: " + errno_text());
    while (::flock(fd_.fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR)
        throw Error(path.string(), "cannot lock: " + errno_text());
      check_interrupted();
      if (stop.load()) throw Stopped{};
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

 private:
  Fd fd_;  // closing it releases the lock
};

// What HEAD on a file's resolve URL says about it.
struct FileMeta {
  std::string file;   // path in the repo
  std::string etag;   // the blob's name: the sha256 of an LFS file, the git blob id otherwise
  int64_t size = -1;  // -1: not said
  std::string url;    // where the bytes are
  bool token = true;  // `url` is on the endpoint's host: the token may go there
  bool sha256() const { return etag.size() == 64 && is_hex(etag); }
};

// One download: the repo, the settings and the commit, with the messages that name them.
struct Job {
  Job(const HubId& i, const Settings& st, const Options& op)
      : id(i),
        s(st),
        o(op),
        spec(i.repo + (i.revision.empty() ? "" : "@" + i.revision)),
        revision(i.revision.empty() ? "main" : i.revision),
        dir(hub_repo_dir(st.cache, i.repo)) {}
  const HubId& id;
  const Settings& s;
  const Options& o;
  std::string spec;  // org/name[@revision], how errors name it
  std::string revision, commit;
  fs::path dir, snapshot;
  Progress progress;  // over the whole download
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();

  std::vector<std::string> auth() const {
    if (s.token.empty()) return {};
    return {"Authorization: Bearer " + s.token};
  }

  // The one-line error for an answer that is not what was asked (FILE empty: the repo's info).
  [[noreturn]] void fail(const Response& r, const std::string& file, const std::string& url) const {
    const std::string code = r.header("x-error-code");
    const std::string page = s.endpoint + "/" + id.repo;
    if (r.status == 401 || r.status == 403) {
      if (code == "RepoNotFound")
        throw Error(spec, "no such repo on " + s.endpoint +
                              " (or it is private: set HF_TOKEN to a token with access)");
      if (s.token.empty())
        throw Error(spec, "the repo is gated or private (HTTP " + std::to_string(r.status) +
                              "): set HF_TOKEN to a token with access (for a gated repo, accept "
                              "its conditions at " +
                              page + " first)");
      throw Error(spec,
                  "the repo is gated or private and the token (HF_TOKEN) has no access to "
                  "it (HTTP " +
                      std::to_string(r.status) + "): accept its conditions at " + page +
                      " or use a token with access");
    }
    if (r.status == 404) {
      if (code == "RevisionNotFound")
        throw Error(spec, "no revision '" + revision + "' in the repo on " + s.endpoint);
      if (code == "RepoNotFound") throw Error(spec, "no such repo on " + s.endpoint);
      if (!file.empty())
        throw Error(spec, "no file '" + file + "' at revision " + revision + " on " + s.endpoint);
      throw Error(spec, "no such repo, or no revision '" + revision + "' in it, on " + s.endpoint);
    }
    throw Error(spec, "unexpected answer HTTP " + std::to_string(r.status) + " from " + url);
  }

  std::string blob(const std::string& etag) const { return (dir / "blobs" / etag).string(); }
};

// Asks until there is an answer: a broken connection or a busy server is tried kTries times.
Response ask(Http& http, const Job& j, const Request& q, const std::string& what) {
  for (int tries = 1;; ++tries) {
    std::string why;
    try {
      Response r = http.perform(q);
      if (r.status != 429 && r.status < 500) return r;
      why = "HTTP " + std::to_string(r.status);
    } catch (const TransportError& e) {
      why = e.what();
    }
    if (tries == kTries)
      throw Error(j.spec, what + ": no answer from " + q.url + " after " + std::to_string(kTries) +
                              " tries (" + why + ")");
    backoff(tries, q.stop);
  }
}

// The commit REVISION is at and the repo's files.
json repo_info(Http& http, Job& j) {
  const std::string url =
      j.s.endpoint + "/api/models/" + j.id.repo + "/revision/" + url_encode(j.revision, false);
  Response r;
  try {
    r = http.perform({false, url, j.auth(), {}, nullptr});
  } catch (const TransportError& e) {
    // No network: fail at once rather than after retries, saying what the cache holds.
    const bool cached = cached_snapshot(j.id, j.s.cache).has_value();
    throw Error(j.spec, "cannot reach " + j.s.endpoint + " (" + e.what() + "), and " +
                            (cached ? "HF_HUB_OFFLINE=1 uses the copy in the Hugging Face cache"
                                    : "the id is not in the Hugging Face cache") +
                            " (" + j.s.cache + ")");
  }
  if (r.status != 200) j.fail(r, "", url);
  json info = json::parse(r.body, nullptr, false);
  if (info.is_discarded() || !info.is_object() || !info.contains("sha") ||
      !info["sha"].is_string() || !info.contains("siblings") || !info["siblings"].is_array())
    throw Error(j.spec, "unexpected answer from " + url + " (no JSON with sha and siblings)");
  return info;
}

// A repo path that stays inside the snapshot directory.
bool safe_path(const std::string& f) {
  if (f.empty() || f.front() == '/') return false;
  size_t start = 0;
  for (;;) {
    const size_t end = f.find('/', start);
    const std::string part = f.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (end == std::string::npos) return true;
    start = end + 1;
  }
}

bool is_pickle(const std::string& f) {
  for (const char* ext : {".bin", ".pt", ".pth", ".pkl", ".ckpt"})
    if (f.ends_with(ext)) return true;
  return false;
}

// HEAD on the file's resolve URL, following relative redirects (a renamed repo) and stopping at
// an absolute one: the bytes are there.
FileMeta file_meta(Http& http, const Job& j, const std::string& file) {
  FileMeta m{file, "", -1, "", true};
  std::string url =
      j.s.endpoint + "/" + j.id.repo + "/resolve/" + j.commit + "/" + url_encode(file, true);
  for (int hop = 0;; ++hop) {
    const Response r = ask(http, j, {true, url, j.auth(), {}, nullptr}, file);
    const std::string linked = r.header("x-linked-etag");
    std::string etag = linked.empty() ? r.header("etag") : linked;
    if (etag.starts_with("W/")) etag.erase(0, 2);
    std::erase(etag, '"');
    if (r.status >= 300 && r.status < 400) {
      const std::string loc = r.header("location");
      const std::string next = url_resolve(url, loc);
      if (loc.empty() || next.empty())
        throw Error(j.spec, file + ": redirect without a usable Location from " + url);
      if (loc.find("://") == std::string::npos && hop < kRedirects) {
        url = next;
        continue;
      }
      m.url = next;
      m.token = url_origin(next) == url_origin(j.s.endpoint);
      if (const std::string n = r.header("x-linked-size"); !n.empty())
        m.size = std::atoll(n.c_str());
    } else if (r.status == 200) {
      m.url = url;
      const std::string n = r.header("x-linked-size").empty() ? r.header("content-length")
                                                              : r.header("x-linked-size");
      if (!n.empty()) m.size = std::atoll(n.c_str());
    } else {
      j.fail(r, file, url);
    }
    if (etag.empty() || !std::all_of(etag.begin(), etag.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
        }))
      throw Error(j.spec, file + ": no usable ETag from " + url + " ('" + etag + "')");
    m.etag = etag;
    return m;
  }
}

// SNAPSHOT/FILE -> ../../blobs/ETAG (one more ../ per folder in FILE), replaced atomically.
void link_blob(const Job& j, const std::string& file, const std::string& etag) {
  const fs::path link = j.snapshot / file;
  std::error_code ec;
  fs::create_directories(link.parent_path(), ec);
  std::string target = "../";
  for (const char c : file)
    if (c == '/') target += "../";
  target += "../blobs/" + etag;
  const std::string tmp = link.string() + ".tmp-" + std::to_string(::getpid());
  ::unlink(tmp.c_str());
  if (::symlink(target.c_str(), tmp.c_str()) != 0 || ::rename(tmp.c_str(), link.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw Error(link.string(), "cannot create the link into blobs/: " + why);
  }
}

void write_all(int fd, const char* p, size_t n, int64_t at, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, at);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      throw Error(path, "cannot write: " + errno_text() +
                            " (the partial download stays there for the next run)");
    p += w, n -= size_t(w), at += w;
  }
}

// The blob of M into blobs/ETAG through blobs/ETAG.incomplete, resumed from what that file holds.
void fetch_blob(Http& http, const Job& j, const FileMeta& m, std::atomic<int64_t>& received,
                const std::atomic<bool>& stop) {
  const fs::path locks = fs::path(j.s.cache) / ".locks" / j.dir.filename();
  std::error_code ec;
  fs::create_directories(locks, ec);
  const FileLock lock(locks / (m.etag + ".lock"), stop);
  const std::string blob = j.blob(m.etag), part = blob + ".incomplete";
  if (fs::is_regular_file(blob, ec)) return;  // another process finished it while we waited

  const Fd fd(::open(part.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (fd.fd < 0) throw Error(part, "cannot open: " + errno_text());
  struct stat st {};
  ::fstat(fd.fd, &st);
  int64_t have = st.st_size;
  Sha256 sha;
  auto restart = [&] {
    if (::ftruncate(fd.fd, 0) != 0) throw Error(part, "cannot truncate: " + errno_text());
    have = 0;
    sha.reset();
  };
  if (m.size >= 0 && have > m.size) restart();
  if (m.sha256()) {  // the bytes kept from an earlier try count towards the checksum
    std::string buf(size_t(kChunk), '\0');
    for (int64_t at = 0; at < have;) {
      const ssize_t n = ::pread(fd.fd, buf.data(), size_t(std::min(kChunk, have - at)), at);
      if (n <= 0) throw Error(part, "cannot read: " + errno_text());
      sha.update(buf.data(), size_t(n));
      at += n;
    }
  }

  for (int tries = 1; m.size < 0 || have < m.size; ++tries) {
    const int64_t before = have;
    std::string why;
    try {
      Request q{false, m.url, m.token ? j.auth() : std::vector<std::string>{}, {}, &stop};
      if (have > 0) q.headers.push_back("Range: bytes=" + std::to_string(have) + "-");
      bool first = true;
      q.on_body = [&](const Response& r, std::string_view data) {
        if (r.status != 200 && r.status != 206) return;  // an error page
        if (first) {
          first = false;
          if (r.status == 200 && have > 0) restart();  // the range was ignored: from the start
          if (r.status == 206 &&
              r.header("content-range").find("bytes " + std::to_string(have) + "-") != 0)
            throw Retry("asked from byte " + std::to_string(have) + ", answered " +
                        r.header("content-range"));
        }
        write_all(fd.fd, data.data(), data.size(), have, part);
        if (m.sha256()) sha.update(data.data(), data.size());
        have += int64_t(data.size());
        received += int64_t(data.size());
      };
      const Response r = http.perform(q);
      if (r.status == 416) {  // nothing to give from `have` on: the kept bytes are not this file
        restart();
        why = "HTTP 416";
      } else if (r.status == 429 || r.status >= 500) {
        why = "HTTP " + std::to_string(r.status);
      } else if (r.status != 200 && r.status != 206) {
        j.fail(r, m.file, m.url);
      } else if (m.size < 0 || have == m.size) {
        break;
      } else {
        why = "got " + std::to_string(have) + " of " + std::to_string(m.size) + " bytes";
        if (have > m.size) restart();
      }
    } catch (const TransportError& e) {
      why = e.what();
    } catch (const Retry& e) {
      why = e.what();
    }
    if (have > before) tries = 1;  // it got somewhere: the tries start over
    if (tries == kTries)
      throw Error(j.spec, m.file + ": download failed after " + std::to_string(kTries) +
                              " tries (" + why + "); " + part + " is kept for the next run");
    backoff(tries, &stop);
  }

  if (m.sha256()) {
    const std::string got = sha.hex();
    if (got != m.etag) {
      ::unlink(part.c_str());
      throw Error(j.spec, m.file + ": sha256 " + got + " is not the hub's " + m.etag +
                              " (the download was removed; run again)");
    }
  }
  if (::fsync(fd.fd) != 0) throw Error(part, "cannot write: " + errno_text());
  if (::rename(part.c_str(), blob.c_str()) != 0)
    throw Error(part, "cannot rename to " + blob + ": " + errno_text());
}

// FILES into the snapshot: those already there are kept, blobs already in blobs/ are linked, the
// rest is downloaded, o.parallel at a time.
void fetch(Http& http, Job& j, const std::vector<std::string>& files, Result& res) {
  std::vector<FileMeta> todo;
  std::error_code ec;
  for (const auto& f : files) {
    ++res.files;
    if (fs::is_regular_file(j.snapshot / f, ec)) continue;  // follows the link: the blob is there
    FileMeta m = file_meta(http, j, f);
    if (fs::is_regular_file(j.blob(m.etag), ec))
      link_blob(j, f, m.etag);
    else
      todo.push_back(std::move(m));
  }
  if (todo.empty()) return;
  fs::create_directories(j.dir / "blobs", ec);
  fs::create_directories(j.snapshot, ec);
  for (const auto& m : todo) {
    const auto kept = fs::file_size(j.blob(m.etag) + ".incomplete", ec);
    j.progress.total += std::max<int64_t>(0, m.size - (ec ? 0 : int64_t(kept)));
  }
  j.progress.files += int(todo.size());

  std::atomic<int64_t> received{0};
  std::atomic<size_t> next{0};
  std::atomic<int> running{0}, done{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::exception_ptr error;
  auto worker = [&] {
    try {
      Http h;
      for (size_t i; (i = next++) < todo.size();) {
        fetch_blob(h, j, todo[i], received, stop);
        link_blob(j, todo[i].file, todo[i].etag);
        ++done;
      }
    } catch (const Stopped&) {
    } catch (...) {
      const std::lock_guard g(mu);
      if (!error) error = std::current_exception();
      stop = true;
    }
    --running;
  };
  const int n = std::clamp(j.o.parallel, 1, int(todo.size()));
  running = n;
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) threads.emplace_back(worker);
  const Progress base = j.progress;
  auto report = [&] {
    j.progress.done = base.done + received;
    j.progress.files_done = base.files_done + done;
    if (j.o.progress) j.o.progress(j.progress);
  };
  while (running > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    report();
  }
  for (auto& t : threads) t.join();
  report();
  res.fetched += int(todo.size());
  res.bytes += received;
  if (error) std::rethrow_exception(error);
}

std::vector<std::string> choose_files(Http& http, Job& j, const std::set<std::string>& repo,
                                      Result& res) {
  std::vector<std::string> files;
  if (!j.o.include.empty()) {
    bool pickles = false;
    for (const auto& f : repo) {
      const bool match = std::any_of(j.o.include.begin(), j.o.include.end(), [&](const auto& g) {
        return ::fnmatch(g.c_str(), f.c_str(), 0) == 0;
      });
      if (match && is_pickle(f))
        pickles = true;
      else if (match)
        files.push_back(f);
    }
    if (files.empty()) {
      std::string globs;
      for (const auto& g : j.o.include) globs += (globs.empty() ? "" : ", ") + g;
      throw Error(j.spec, "no file at revision " + j.revision + " matches " + globs +
                              (pickles ? " (PyTorch pickles are never downloaded)" : ""));
    }
    return files;
  }
  if (!repo.count("config.json"))
    throw Error(j.spec, "no config.json at revision " + j.revision + ": not a model repository");
  files.push_back("config.json");
  if (repo.count("model.safetensors")) {
    files.push_back("model.safetensors");
  } else if (repo.count("model.safetensors.index.json")) {
    // The index names the shards: fetched first, on its own.
    const std::string index = "model.safetensors.index.json";
    fetch(http, j, {index}, res);
    const json idx = read_json_file((j.snapshot / index).string());
    const auto wm = idx.find("weight_map");
    if (wm == idx.end() || !wm->is_object())
      throw Error((j.snapshot / index).string(), "missing weight_map object");
    std::set<std::string> shards;
    for (const auto& [name, shard] : wm->items())
      if (shard.is_string()) shards.insert(shard.get<std::string>());
    for (const auto& s : shards) {
      if (!repo.count(s))
        throw Error(j.spec, index + " names the shard '" + s + "', which is not in the repo");
      files.push_back(s);
    }
  } else {
    std::string pickle;
    for (const auto& f : repo)
      if (is_pickle(f) && pickle.empty()) pickle = f;
    throw Error(j.spec, "no safetensors weights at revision " + j.revision +
                            (pickle.empty() ? ""
                                            : ", only PyTorch pickles (" + pickle +
                                                  "), which headsurgeon does not read"));
  }
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"})
    if (repo.count(f)) files.push_back(f);
  return files;
}

}  // namespace

Settings settings_from_env() {
  Settings s;
  const char* e = std::getenv("HF_ENDPOINT");
  s.endpoint = e && *e ? e : "https://huggingface.co";
  while (s.endpoint.ends_with('/')) s.endpoint.pop_back();
  if (const char* t = std::getenv("HF_TOKEN"); t && *t) {
    s.token = trim(t);
  } else {
    const char* h = std::getenv("HF_HOME");
    const char* home = std::getenv("HOME");
    const fs::path hf =
        h && *h ? fs::path(h) : fs::path(home && *home ? home : ".") / ".cache" / "huggingface";
    std::ifstream f(hf / "token");
    s.token = trim(std::string(std::istreambuf_iterator<char>(f), {}));
  }
  s.cache = hub_cache_root();
  const char* off = std::getenv("HF_HUB_OFFLINE");
  const std::string v = lower(off ? off : "");
  s.offline = v == "1" || v == "true" || v == "yes" || v == "on";
  return s;
}

Result download(const HubId& id, const Settings& s, const Options& o) {
  Job j(id, s, o);
  Result res;
  if (s.offline) {
    const auto snap = cached_snapshot(id, s.cache);
    if (!snap)
      throw Error(j.spec, "not in the Hugging Face cache (" + s.cache +
                              ") and offline: nothing is downloaded");
    res.snapshot = *snap;
    res.commit = fs::path(*snap).filename().string();
    return res;
  }
  Http http;
  const json info = repo_info(http, j);
  j.commit = info["sha"].get<std::string>();
  if (j.commit.empty() || !std::all_of(j.commit.begin(), j.commit.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c));
      }))
    throw Error(j.spec, "unexpected commit '" + j.commit + "' from " + s.endpoint);
  j.snapshot = j.dir / "snapshots" / j.commit;
  std::set<std::string> repo;
  for (const auto& sib : info["siblings"])
    if (sib.is_object() && sib.contains("rfilename") && sib["rfilename"].is_string()) {
      const std::string f = sib["rfilename"].get<std::string>();
      if (!safe_path(f)) throw Error(j.spec, "the repo lists an unsafe file name '" + f + "'");
      repo.insert(f);
    }

  const auto files = choose_files(http, j, repo, res);
  fetch(http, j, files, res);
  if (j.revision != j.commit) {
    const fs::path ref = j.dir / "refs" / j.revision;
    std::error_code ec;
    fs::create_directories(ref.parent_path(), ec);
    write_file_atomic(ref.string(), j.commit);
  }
  res.snapshot = j.snapshot.string();
  res.commit = j.commit;
  res.seconds = seconds_since(j.start);
  return res;
}

}  // namespace hs::hub
