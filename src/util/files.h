// Reading user files with one-line errors that name them.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace hs {

// Whole file as bytes; with utf8, invalid UTF-8 is an error "PATH: invalid UTF-8 at byte N".
std::string read_file(const std::string& path, bool utf8);
// A JSON file; "PATH: cannot open file" / "PATH: not valid JSON (at byte N)".
nlohmann::json read_json_file(const std::string& path);

}  // namespace hs
