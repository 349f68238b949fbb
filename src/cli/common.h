// Shared plumbing of the subcommands: reading user files with one-line errors, atomic output
// files, progress lines, thread settings.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "util/clock.h"
#include "util/files.h"
#include "util/interrupt.h"

namespace hs::cli {

// --corpus (required, repeatable), --text-field and --max-tokens, as repair and pretrain take
// them; `use` says what the first N tokens are for.
void add_corpus_options(CLI::App* sub, std::vector<std::string>& corpus, std::string& text_field,
                        int64_t& max_tokens, const std::string& use);

// Exit codes scripts can rely on (documented in the README).
constexpr int kExitOk = 0;
constexpr int kExitError = 1;          // bad input, missing file, numerical failure
constexpr int kExitUsage = 2;          // command-line syntax
constexpr int kExitInterrupted = 130;  // Ctrl-C or SIGTERM (repair: state saved, resumable)

using hs::read_file;
// PATH written atomically (temp + fsync + rename); "-" writes to stdout.
void write_output(const std::string& path, const std::string& content);
// Fails early (before hours of work) when PATH cannot be an output file.
void check_output_path(const std::string& path);
void write_json(const std::string& path, const nlohmann::json& j);

// Threads for OpenMP and OpenBLAS (0 = all cores).
void set_threads(int n);

// --offline: hub ids come from the local cache only, as with HF_HUB_OFFLINE=1.
void set_offline(bool on);
bool offline();

// Progress on stderr: rewritten in place on a terminal, a line every few seconds otherwise.
class Progress {
 public:
  Progress(std::string what, bool enabled);
  // done/total units; `extra` is appended (e.g. "1234 tok/s").
  void update(int64_t done, int64_t total, const std::string& extra = "");
  void finish();

 private:
  std::string what_;
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_, last_;
  bool printed_ = false;
};

using hs::seconds_since;

// Subcommands register themselves here.
void add_diagnose(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_ppl(CLI::App& app);
void add_plan(CLI::App& app);
void add_repair(CLI::App& app);
void add_dormancy(CLI::App& app);
void add_ablate(CLI::App& app);
void add_drift(CLI::App& app);
void add_report(CLI::App& app);
void add_generate(CLI::App& app);
void add_pretrain(CLI::App& app);
void add_demo(CLI::App& app);
void add_download(CLI::App& app);

// Thrown by a subcommand to end the process with a code other than 0 after a clean stop.
struct ExitCode {
  int code;
};

// The callback of a command that runs long: Ctrl-C and SIGTERM stop it at the next boundary of
// its work (hs::Interrupted, exit code 130), a third signal at once.
template <class F>
std::function<void()> interruptible(F f) {
  return [f = std::move(f)] {
    const InterruptHandlers handlers;
    f();
  };
}

}  // namespace hs::cli
