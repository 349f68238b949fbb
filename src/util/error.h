// One error type for everything a user can get wrong. The message is a single line that names
// the file (or option) and the problem, e.g. "models/x/config.json: missing key 'n_head'".
#pragma once

#include <stdexcept>
#include <string>

namespace hs {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
  // "where: what" — where is usually a path.
  Error(const std::string& where, const std::string& what)
      : std::runtime_error(where + ": " + what) {}
};

}  // namespace hs
