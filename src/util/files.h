// Reading and writing user files with one-line errors that name them.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace hs {

// Offset of the first invalid UTF-8 sequence in s (overlong forms, surrogates and values past
// U+10FFFF included), or npos.
size_t first_invalid_utf8(std::string_view s);

// Whole file as bytes; with utf8, invalid UTF-8 is an error "PATH: invalid UTF-8 at byte N".
std::string read_file(const std::string& path, bool utf8);
// A JSON file; "PATH: cannot open file" / "PATH: not valid JSON (at byte N)".
nlohmann::json read_json_file(const std::string& path);
// The lines of a UTF-8 file that hold something besides spaces, tabs and CR (held-out prompts,
// one per line), as written.
std::vector<std::string> read_nonblank_lines(const std::string& path);

// PATH replaced atomically: written to PATH.tmp-PID, fsynced, renamed over it. A path that
// exists and is not a regular file (/dev/null, a FIFO) is written in place, since renaming
// over it would replace it. Errors: "PATH: cannot write file" / "write failed".
void write_file_atomic(const std::string& path, const std::string& content);

// DIR replaced atomically by a directory that fill(tmp) writes into tmp (DIR.tmp-PID): the old
// DIR survives until the new one is complete, and a failed fill leaves no tmp behind. Errors
// name the file under DIR; errors other than hs::Error become "DIR: cannot write: what".
void write_dir_atomic(const std::string& dir, const std::function<void(const std::string&)>& fill);

// After a crash: removes what unfinished atomic writes left under DIR (NAME.tmp-PID[-N] files
// and folders), and puts back a folder that write_dir_atomic had moved aside (NAME.old-PID with
// no NAME). Returns how many it found. For a directory only one process writes to.
int recover_interrupted_writes(const std::string& dir);

}  // namespace hs
