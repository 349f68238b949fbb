// Reading user files with one-line errors that name them.
#pragma once

#include <string>

namespace hs {

// Whole file as bytes; with utf8, invalid UTF-8 is an error "PATH: invalid UTF-8 at byte N".
std::string read_file(const std::string& path, bool utf8);

}  // namespace hs
