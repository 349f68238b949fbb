// headsurgeon diagnose MODEL: classify every attention head from one forward pass.
#include <iostream>

#include "cli/common.h"
#include "cli/model_loading.h"
#include "diagnose/run.h"
#include "util/error.h"

namespace hs::cli {

namespace {

struct DiagnoseArgs {
  std::string model;
  std::vector<std::string> prompts, prompt_files;
  bool bos = false, quiet = false;
  Thresholds thr;
  std::string json, svg;
};

void run_diagnose(const DiagnoseArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  check_output_path(a.json);
  check_output_path(a.svg);
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

  // One pass over the weights: streaming converts each layer exactly once, and never the
  // embedding matrix (only the prompt's rows are read).
  LoadedModel m = load_model(a.model, true, /*stream=*/true);
  // A streamed 7b1 takes long enough per layer to want an ETA.
  Progress progress("diagnose: layer", !a.quiet);
  opts.progress = [&](int64_t done, int64_t total) { progress.update(done, total); };
  const auto t1 = std::chrono::steady_clock::now();
  const Diagnosis d = diagnose(*m.model, *m.tokenizer, opts, a.model);
  const double fwd = seconds_since(t1);
  progress.finish();

  const bool json_to_stdout = a.json == "-";
  if (!json_to_stdout) std::cout << render_table(d);
  if (!a.json.empty()) write_json(a.json, to_json(d));
  if (!a.svg.empty()) write_output(a.svg, render_svg(d));
  if (!a.quiet)
    std::cerr << "diagnose: load " << m.seconds << " s, forward " << fwd << " s, total "
              << seconds_since(t0) << " s"
              << "\n";
}

}  // namespace

void add_diagnose(CLI::App& app) {
  auto a = std::make_shared<DiagnoseArgs>();
  CLI::App* sub = app.add_subcommand(
      "diagnose",
      "Diagnose every attention head: bos_mass (attention on the first token), entropy and local "
      "mass per head, its class (healthy / bos-sink / dead / low-entropy) and the sick band.");
  sub->add_option("MODEL", a->model, "checkpoint directory or hub id in the local cache")
      ->required();
  sub->add_option("--prompt", a->prompts,
                  "diagnostic prompt (repeatable; default: the paper's prompt). With several "
                  "prompts the metrics are averaged and their spread reported");
  sub->add_option("--prompt-file", a->prompt_files, "read a prompt from a UTF-8 file (repeatable)");
  sub->add_flag("--bos", a->bos, "prepend <s> (BLOOM's tokenizer adds no BOS token)");
  sub->add_option("--dead", a->thr.dead, "DEAD when bos_mass > this")->capture_default_str();
  sub->add_option("--sink", a->thr.sink, "BOS-sink when bos_mass > this (and not DEAD)")
      ->capture_default_str();
  sub->add_option("--low-entropy", a->thr.low_entropy,
                  "low-entropy when not a sink and entropy < this (nats)")
      ->capture_default_str();
  sub->add_option("--local", a->thr.local, "healthy pattern 'local' when local_mass > this")
      ->capture_default_str();
  sub->add_option("--band-threshold", a->thr.band,
                  "a head index belongs to the sick band when at least this fraction of layers "
                  "have it sick")
      ->capture_default_str();
  sub->add_option("--json", a->json,
                  "write the diagnosis as JSON to FILE ('-' = stdout, no table)");
  sub->add_option("--svg", a->svg, "write the heatmap + bos_mass histogram as SVG to FILE");
  sub->add_flag("-q,--quiet", a->quiet, "no progress or timing lines on stderr");
  sub->callback([a] {
    for (double v : {a->thr.dead, a->thr.sink, a->thr.low_entropy, a->thr.local, a->thr.band})
      if (!(v >= 0)) throw Error("thresholds", "must be non-negative numbers");
    if (a->thr.sink > a->thr.dead) throw Error("--sink", "must not exceed --dead");
    run_diagnose(*a);
  });
}

}  // namespace hs::cli
