// A stand-in for the Hugging Face hub on 127.0.0.1, for the download tests and benchmark: the
// protocol as the hub serves it, and faults on demand. Two listening sockets on ephemeral ports:
//   the hub   http://127.0.0.1:P   GET /api/models/REPO/revision/REV -> {"sha", "siblings"}
//                                  HEAD|GET /REPO/resolve/REV/FILE -> 200 with the bytes, ETag and
//                                  X-Repo-Commit; an LFS file -> 302 to the CDN with X-Linked-Etag
//                                  (its sha256, quoted) and X-Linked-Size
//   the CDN   http://localhost:Q   GET /cdn/SHA256, with Range: another host and port, so a client
//                                  that forwards its token there is caught (the log keeps every
//                                  request's Authorization)
// Gated repos answer 401 without their token and 403 with another; unknown repos, revisions
// and files 404 with the hub's X-Error-Code. Faults: the next transfer of a file dropped after
// N bytes, and a rate limit on every body. One thread per connection, one request each.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace hs::test {

inline std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < n; ++i) s += {digits[md[i] >> 4], digits[md[i] & 15]};
  return s;
}

struct HubFile {
  std::string content;
  bool lfs = false;          // served through the CDN, named by its sha256
  bool listed_only = false;  // in the siblings, but resolve answers 404 (a file gone missing)
  // The blob name the hub gives: the sha256 for LFS files, a git-like 40-hex id otherwise.
  std::string etag() const { return lfs ? sha256_hex(content) : sha256_hex(content).substr(0, 40); }
};

struct HubRepo {
  std::string sha;                       // the commit
  std::vector<std::string> revisions;    // branch and tag names at `sha` (the sha works too)
  std::map<std::string, HubFile> files;  // by path in the repo
  std::string token;                     // non-empty: gated, this token has access
};

// One request as the stand-in saw it.
struct Seen {
  std::string server;  // "hub" or "cdn"
  std::string method, path, host, authorization, range;
};

class StandInHub {
 public:
  StandInHub() {
    hub_ = listen_on();
    cdn_ = listen_on();
    threads_.emplace_back([this] { accept_loop(hub_.fd, false); });
    threads_.emplace_back([this] { accept_loop(cdn_.fd, true); });
  }
  ~StandInHub() {
    stop_ = true;
    // Connection threads end with their request; the accept loops look at stop_ every 50 ms.
    for (;;) {
      std::vector<std::thread> ts;
      {
        const std::lock_guard g(mu_);
        ts.swap(threads_);
      }
      if (ts.empty()) break;
      for (auto& t : ts) t.join();
    }
    ::close(hub_.fd);
    ::close(cdn_.fd);
  }
  StandInHub(const StandInHub&) = delete;
  StandInHub& operator=(const StandInHub&) = delete;

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(hub_.port); }
  int cdn_port() const { return cdn_.port; }

  // Before the downloads that read it: replies point into the files.
  void add_repo(const std::string& id, HubRepo r) {
    const std::lock_guard g(mu_);
    repos_[id] = std::move(r);
    for (const auto& [name, f] : repos_[id].files) {
      const std::string& etag = etags_[id + "/" + name] = f.etag();
      if (f.lfs) blobs_[etag] = &f.content;
    }
  }
  // The next transfer of the LFS blob SHA256 (or of the non-LFS file FILE) ends after `bytes` of
  // its body: the connection is closed in the middle.
  void drop_next(const std::string& key, int64_t bytes) {
    const std::lock_guard g(mu_);
    drops_[key] = bytes;
  }
  // Bodies are sent at this many bytes per second (0: as fast as the socket takes them).
  void set_rate(int64_t bytes_per_second) { rate_ = bytes_per_second; }
  std::vector<Seen> log() const {
    const std::lock_guard g(mu_);
    return log_;
  }
  void clear_log() {
    const std::lock_guard g(mu_);
    log_.clear();
  }

 private:
  struct Listener {
    int fd = -1, port = 0;
  };
  struct Reply {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    const std::string* body = nullptr;  // the file (not copied: the benchmark's is large)
    std::string text;                   // or this
    std::string drop_key;
  };

  static Listener listen_on() {
    Listener l;
    l.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(l.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (::bind(l.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l.fd, 64) != 0)
      throw std::runtime_error("stand-in hub: cannot listen on 127.0.0.1");
    socklen_t len = sizeof a;
    ::getsockname(l.fd, reinterpret_cast<sockaddr*>(&a), &len);
    l.port = ntohs(a.sin_port);
    return l;
  }

  void accept_loop(int fd, bool cdn) {
    while (!stop_) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      const std::lock_guard g(mu_);
      threads_.emplace_back([this, c, cdn] {
        serve(c, cdn);
        ::close(c);
      });
    }
  }

  static std::string lower(std::string s) {
    for (char& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    return s;
  }
  static std::string url_decode(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i)
      if (s[i] == '%' && i + 2 < s.size()) {
        out += char(std::stoi(s.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        out += s[i];
      }
    return out;
  }

  void serve(int c, bool cdn) {
    std::string req;
    char buf[4096];
    while (req.find("\r\n\r\n") == std::string::npos) {
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 5000) <= 0) return;
      const ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      req.append(buf, size_t(n));
    }
    std::map<std::string, std::string> h;
    size_t eol = req.find("\r\n");
    const std::string first = req.substr(0, eol);
    for (size_t pos = eol + 2; pos < req.size();) {
      const size_t e = req.find("\r\n", pos);
      const std::string line = req.substr(pos, e - pos);
      if (line.empty()) break;
      const size_t colon = line.find(':');
      if (colon != std::string::npos)
        h[lower(line.substr(0, colon))] = line.substr(line.find_first_not_of(' ', colon + 1));
      pos = e + 2;
    }
    const size_t sp1 = first.find(' '), sp2 = first.find(' ', sp1 + 1);
    const std::string method = first.substr(0, sp1), path = first.substr(sp1 + 1, sp2 - sp1 - 1);
    {
      const std::lock_guard g(mu_);
      log_.push_back(
          {cdn ? "cdn" : "hub", method, path, h["host"], h["authorization"], h["range"]});
    }
    Reply r = cdn ? cdn_reply(path) : hub_reply(path, h["authorization"]);
    send_reply(c, r, method == "HEAD", h["range"]);
  }

  Reply error(int status, const std::string& code) {
    Reply r;
    r.status = status;
    r.headers = {{"X-Error-Code", code}, {"Content-Type", "application/json"}};
    r.text = "{\"error\": \"" + code + "\"}";
    return r;
  }

  Reply hub_reply(const std::string& path, const std::string& auth) {
    const std::lock_guard g(mu_);
    // /api/models/ORG/NAME/revision/REV  or  /ORG/NAME/resolve/REV/FILE
    const bool api = path.starts_with("/api/models/");
    const std::string rest = api ? path.substr(12) : path.substr(1);
    const size_t s1 = rest.find('/'), s2 = rest.find('/', s1 + 1);
    if (s1 == std::string::npos || s2 == std::string::npos) return error(404, "RepoNotFound");
    const std::string id = rest.substr(0, s2);
    const auto it = repos_.find(id);
    if (it == repos_.end()) return error(404, "RepoNotFound");
    const HubRepo& repo = it->second;
    const std::string verb = api ? "revision/" : "resolve/";
    if (rest.compare(s2 + 1, verb.size(), verb) != 0) return error(404, "EntryNotFound");
    std::string tail = rest.substr(s2 + 1 + verb.size());
    const size_t s3 = api ? std::string::npos : tail.find('/');
    const std::string rev = url_decode(tail.substr(0, s3));
    const bool known = rev == repo.sha || std::find(repo.revisions.begin(), repo.revisions.end(),
                                                    rev) != repo.revisions.end();
    if (api) {
      if (!known) return error(404, "RevisionNotFound");
      nlohmann::json sib = nlohmann::json::array();
      for (const auto& [name, f] : repo.files) sib.push_back({{"rfilename", name}});
      Reply r;
      r.text = nlohmann::json{{"id", id}, {"sha", repo.sha}, {"siblings", sib}}.dump();
      r.headers = {{"Content-Type", "application/json"}};
      return r;
    }
    if (!repo.token.empty() && auth != "Bearer " + repo.token)
      return error(auth.empty() ? 401 : 403, "GatedRepo");
    if (!known) return error(404, "RevisionNotFound");
    const std::string file = url_decode(tail.substr(s3 + 1));
    const auto f = repo.files.find(file);
    if (f == repo.files.end() || f->second.listed_only) return error(404, "EntryNotFound");
    Reply r;
    r.headers = {{"X-Repo-Commit", repo.sha}};
    const std::string& etag = etags_[id + "/" + file];
    if (f->second.lfs) {  // the hub's ETag is then the pointer file's; X-Linked-Etag the blob's
      r.status = 302;
      r.headers.push_back(
          {"Location", "http://localhost:" + std::to_string(cdn_.port) + "/cdn/" + etag});
      r.headers.push_back({"X-Linked-Etag", "\"" + etag + "\""});
      r.headers.push_back({"X-Linked-Size", std::to_string(f->second.content.size())});
      r.headers.push_back({"ETag", "\"" + etag.substr(24) + "\""});
      return r;
    }
    r.headers.push_back({"ETag", "\"" + etag + "\""});
    r.body = &f->second.content;
    r.drop_key = file;
    return r;
  }

  Reply cdn_reply(const std::string& path) {
    const std::lock_guard g(mu_);
    if (!path.starts_with("/cdn/")) return error(404, "EntryNotFound");
    const auto b = blobs_.find(path.substr(5));
    if (b == blobs_.end()) return error(404, "EntryNotFound");
    Reply r;
    r.body = b->second;
    r.drop_key = b->first;
    return r;
  }

  bool send_all(int c, const char* p, size_t n) {
    while (n > 0) {
      const ssize_t w = ::send(c, p, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      p += w, n -= size_t(w);
    }
    return true;
  }

  void send_reply(int c, Reply& r, bool head, const std::string& range) {
    const std::string& body = r.body ? *r.body : r.text;
    int64_t from = 0, size = int64_t(body.size());
    if (r.body && range.starts_with("bytes=")) {
      from = std::stoll(range.substr(6));
      if (from >= size) {
        r = error(416, "RangeNotSatisfiable");
        return send_reply(c, r, head, "");
      }
      r.status = 206;
      r.headers.push_back({"Content-Range", "bytes " + std::to_string(from) + "-" +
                                                std::to_string(size - 1) + "/" +
                                                std::to_string(size)});
    }
    const char* reason = r.status == 200 ? "OK" : r.status == 206 ? "Partial Content" : "Other";
    std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + reason + "\r\n";
    for (const auto& [k, v] : r.headers) out += k + ": " + v + "\r\n";
    out += "Content-Length: " + std::to_string(r.status == 302 ? 0 : size - from) + "\r\n";
    out += "Connection: close\r\n\r\n";
    if (!send_all(c, out.data(), out.size()) || head || r.status == 302) return;
    int64_t end = size;
    {
      const std::lock_guard g(mu_);
      if (const auto d = drops_.find(r.drop_key); d != drops_.end() && !r.drop_key.empty()) {
        end = std::min(size, from + d->second);
        drops_.erase(d);
      }
    }
    const auto t0 = std::chrono::steady_clock::now();
    constexpr int64_t kPiece = 1 << 20;
    for (int64_t at = from; at < end && !stop_;) {
      const int64_t rate = rate_;
      const int64_t n = std::min(end - at, rate > 0 ? std::max<int64_t>(1, rate / 20) : kPiece);
      if (!send_all(c, body.data() + at, size_t(n))) return;
      at += n;
      if (rate > 0)
        std::this_thread::sleep_until(t0 + std::chrono::microseconds((at - from) * 1000000 / rate));
    }
  }

  Listener hub_, cdn_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> rate_{0};
  mutable std::mutex mu_;
  std::vector<std::thread> threads_;
  std::map<std::string, HubRepo> repos_;
  std::map<std::string, std::string> etags_;         // by "REPO/FILE"
  std::map<std::string, const std::string*> blobs_;  // LFS contents by sha256
  std::map<std::string, int64_t> drops_;
  std::vector<Seen> log_;
};

}  // namespace hs::test
