// One error type for everything a user can get wrong. The message is a single line that names
// the file (or option) and the problem, e.g. "models/x/config.json: missing key 'n_head'".
#pragma once

#include <stdexcept>
#include <string>

namespace hs {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(one_line(what)) {}
  // "where: what" — where is usually a path.
  Error(const std::string& where, const std::string& what)
      : std::runtime_error(one_line(where + ": " + what)) {}

 private:
  // Messages quote the user's text (a model_type, a merge, a plan's layer key): its control
  // characters become '?', so that the message stays one line (the fuzzers found line breaks).
  static std::string one_line(std::string s) {
    for (char& c : s)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    return s;
  }
};

}  // namespace hs
