#include "cli/diagnose_args.h"

#include "cli/common.h"
#include "util/error.h"

namespace hs::cli {

void add_diagnose_options(CLI::App* sub, DiagnoseArgs& a) {
  sub->add_option("--prompt", a.prompts,
                  "diagnostic prompt (repeatable; default: the paper's prompt). With several "
                  "prompts the metrics are averaged and their spread reported");
  sub->add_option("--prompt-file", a.prompt_files, "read a prompt from a UTF-8 file (repeatable)");
  sub->add_flag("--bos", a.bos, "prepend <s> (BLOOM's tokenizer adds no BOS token)");
  sub->add_option("--dead", a.thr.dead, "DEAD when bos_mass > this")->capture_default_str();
  sub->add_option("--sink", a.thr.sink, "BOS-sink when bos_mass > this (and not DEAD)")
      ->capture_default_str();
  sub->add_option("--low-entropy", a.thr.low_entropy,
                  "low-entropy when not a sink and entropy < this (nats)")
      ->capture_default_str();
  sub->add_option("--local", a.thr.local, "healthy pattern 'local' when local_mass > this")
      ->capture_default_str();
  sub->add_option("--band-threshold", a.thr.band,
                  "a head index belongs to the sick band when at least this fraction of layers "
                  "have it sick")
      ->capture_default_str();
}

DiagnoseOptions diagnose_options(const DiagnoseArgs& a) {
  for (double v : {a.thr.dead, a.thr.sink, a.thr.low_entropy, a.thr.local, a.thr.band})
    if (!(v >= 0)) throw Error("thresholds", "must be non-negative numbers");
  if (a.thr.sink > a.thr.dead) throw Error("--sink", "must not exceed --dead");
  DiagnoseOptions opts;
  opts.bos = a.bos;
  opts.thresholds = a.thr;
  opts.prompts = a.prompts;
  for (const auto& f : a.prompt_files) {
    std::string text = read_file(f, true);
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) throw Error(f, "empty prompt file");
    opts.prompts.push_back(std::move(text));
  }
  for (const auto& p : opts.prompts)
    if (p.empty()) throw Error("--prompt", "empty prompt");
  return opts;
}

}  // namespace hs::cli
