#include "hub/http.h"

#include <curl/curl.h>

#include <cctype>
#include <exception>
#include <mutex>

#include "util/interrupt.h"

namespace hs::hub {

namespace {

// How often a transfer looks at Ctrl-C and the stop flag while it waits for the network.
constexpr int kPollMs = 50;

struct Transfer {
  const Request* req;
  Response resp;
  std::exception_ptr error;  // thrown by on_body, rethrown after the transfer
};

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

extern "C" size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::string_view line(data, size * n);
  if (line.starts_with("HTTP/")) {  // a new response (after a 100 Continue): start over
    t->resp.headers.clear();
    const auto sp = line.find(' ');
    t->resp.status =
        sp == std::string_view::npos ? 0 : std::atol(std::string(line.substr(sp + 1, 3)).c_str());
  } else if (const auto colon = line.find(':'); colon != std::string_view::npos) {
    t->resp.headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
  }
  return size * n;
}

extern "C" size_t on_write(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  if (!t->req->on_body) {
    t->resp.body.append(data, size * n);
    return size * n;
  }
  try {
    t->req->on_body(t->resp, std::string_view(data, size * n));
    return size * n;
  } catch (...) {  // an exception must not cross libcurl's C frames
    t->error = std::current_exception();
    return 0;
  }
}

void check(CURLcode rc) {
  if (rc != CURLE_OK) throw std::runtime_error(std::string("libcurl: ") + curl_easy_strerror(rc));
}

}  // namespace

std::string Response::header(const std::string& name) const {
  const auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

Http::Http() {
  static std::once_flag once;
  std::call_once(once, [] { check(curl_global_init(CURL_GLOBAL_DEFAULT)); });
  curl_ = curl_easy_init();
  multi_ = curl_multi_init();
  if (!curl_ || !multi_) throw std::runtime_error("libcurl: cannot create a handle");
}

Http::~Http() {
  curl_multi_cleanup(multi_);
  curl_easy_cleanup(curl_);
}

Response Http::perform(const Request& r) {
  CURL* c = curl_;
  CURLM* m = multi_;
  Transfer t{&r, {}, nullptr};
  char errbuf[CURL_ERROR_SIZE] = "";
  curl_slist* headers = nullptr;
  for (const auto& h : r.headers) headers = curl_slist_append(headers, h.c_str());

  curl_easy_reset(c);
  curl_easy_setopt(c, CURLOPT_URL, r.url.c_str());
  curl_easy_setopt(c, CURLOPT_NOBODY, r.head ? 1L : 0L);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "headsurgeon/0.1.0");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for DNS timeouts
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 20L);
  // A connection that delivers nothing for 30 s is stalled: fail it, and the caller retries.
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
  curl_easy_setopt(c, CURLOPT_BUFFERSIZE, long(CURL_MAX_READ_SIZE));
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);

  // The multi interface, so that this thread wakes up every kPollMs to look at Ctrl-C and the
  // stop flag however long the network is silent (easy_perform's progress callback may wait a
  // second).
  curl_multi_add_handle(m, c);
  CURLcode rc = CURLE_OK;
  bool aborted = false;
  for (int running = 1; running;) {
    curl_multi_perform(m, &running);
    if (!running) break;
    if (hs::interrupted() || (r.stop && r.stop->load())) {
      aborted = true;
      break;
    }
    curl_multi_poll(m, nullptr, 0, kPollMs, nullptr);
  }
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(m, &left))
    if (msg->msg == CURLMSG_DONE && msg->easy_handle == c) rc = msg->data.result;
  curl_multi_remove_handle(m, c);
  curl_slist_free_all(headers);

  if (aborted) {
    if (hs::interrupted()) throw hs::Interrupted();
    throw Stopped{};
  }
  if (t.error) std::rethrow_exception(t.error);
  if (rc != CURLE_OK) throw TransportError(*errbuf ? errbuf : curl_easy_strerror(rc));
  return std::move(t.resp);
}

std::string url_encode(const std::string& s, bool keep_slash) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/'))
      out += ch;
    else
      out += {'%', hex[c >> 4], hex[c & 15]};
  }
  return out;
}

namespace {

// A parsed URL, freed on every path.
struct Url {
  CURLU* h = curl_url();
  ~Url() { curl_url_cleanup(h); }
  bool set(const std::string& url) {
    return curl_url_set(h, CURLUPART_URL, url.c_str(), 0) == CURLUE_OK;
  }
  std::string get(CURLUPart part, unsigned flags = 0) const {
    char* v = nullptr;
    if (curl_url_get(h, part, &v, flags) != CURLUE_OK) return "";
    std::string s = v;
    curl_free(v);
    return s;
  }
};

}  // namespace

std::string url_origin(const std::string& url) {
  Url u;
  if (!u.set(url)) return "";
  return lower(u.get(CURLUPART_SCHEME)) + "://" + lower(u.get(CURLUPART_HOST)) + ":" +
         u.get(CURLUPART_PORT, CURLU_DEFAULT_PORT);
}

std::string url_resolve(const std::string& base, const std::string& location) {
  Url u;
  if (!u.set(base) || !u.set(location)) return "";
  return u.get(CURLUPART_URL);
}

}  // namespace hs::hub
