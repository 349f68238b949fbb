// HTTP requests through libcurl, as the hub client needs them: redirects are not followed (the
// client decides where its token may go), response headers come by lowercase name, the body is
// streamed to a callback, and Ctrl-C or a stop flag aborts a transfer within a fraction of a
// second even while it waits for bytes.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace hs::hub {

struct Response {
  long status = 0;
  std::map<std::string, std::string> headers;  // lowercase names; the last value of each
  std::string body;  // collected only when the request has no body callback
  // The header's value, "" when absent.
  std::string header(const std::string& name) const;
};

struct Request {
  bool head = false;  // HEAD instead of GET
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  // The body as it arrives; the response's status and headers are complete by then. A throw
  // ends the transfer and comes out of perform().
  std::function<void(const Response&, std::string_view)> on_body;
  const std::atomic<bool>* stop = nullptr;  // another thread asks this transfer to end
};

// No response: the host could not be reached, the connection broke or stalled.
struct TransportError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Raised by perform() when Request::stop was set.
struct Stopped {};

// One connection pool (libcurl keeps connections alive between the requests of one Http); use
// one per thread.
class Http {
 public:
  Http();
  ~Http();
  Http(const Http&) = delete;
  Http& operator=(const Http&) = delete;

  // Throws TransportError, Stopped, hs::Interrupted (Ctrl-C) or what on_body threw.
  Response perform(const Request& r);

 private:
  void* curl_;   // CURL*, void* in curl.h (whose macros stay out of this header)
  void* multi_;  // CURLM*: waits on the socket with a timeout
};

// RFC 3986 percent-encoding of everything but unreserved characters (and '/' when keep_slash).
std::string url_encode(const std::string& s, bool keep_slash);

// "scheme://host:port" of an absolute URL (the port made explicit), "" when URL is not one.
std::string url_origin(const std::string& url);
// LOCATION (absolute, or relative as redirects may be) made absolute against BASE.
std::string url_resolve(const std::string& base, const std::string& location);

}  // namespace hs::hub
