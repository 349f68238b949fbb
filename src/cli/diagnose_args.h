// The prompt and threshold options of `diagnose`, shared with the commands that diagnose models
// on the fly (drift), so both measure heads the same way.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "diagnose/run.h"

namespace hs::cli {

struct DiagnoseArgs {
  std::vector<std::string> prompts, prompt_files;
  bool bos = false;
  Thresholds thr;
};

// --prompt, --prompt-file, --bos and the class thresholds (--dead, --sink, ...).
void add_diagnose_options(CLI::App* sub, DiagnoseArgs& a);

// The options with the prompt files read; empty prompts and bad thresholds are errors naming the
// file or option.
DiagnoseOptions diagnose_options(const DiagnoseArgs& a);

}  // namespace hs::cli
