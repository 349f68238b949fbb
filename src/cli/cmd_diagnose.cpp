// headsurgeon diagnose MODEL: classify every attention head from one forward pass.
#include <iostream>

#include "cli/common.h"
#include "cli/diagnose_args.h"
#include "cli/model_loading.h"
#include "diagnose/run.h"

namespace hs::cli {

namespace {

struct DiagnoseCmd {
  std::string model;
  DiagnoseArgs diag;
  DeviceArgs dev;
  bool quiet = false;
  std::string json, svg;
};

void run_diagnose(const DiagnoseCmd& a) {
  const auto t0 = std::chrono::steady_clock::now();
  check_output_path(a.json);
  check_output_path(a.svg);
  DiagnoseOptions opts = diagnose_options(a.diag);

  // One pass over the weights: streaming converts each layer exactly once, and never the
  // embedding matrix (only the prompt's rows are read).
  LoadedModel m = load_model(a.model, true, /*stream=*/true, a.dev);
  // A streamed 7b1 takes long enough per layer to want an ETA.
  Progress progress("diagnose: layer", !a.quiet);
  opts.progress = [&](int64_t done, int64_t total) { progress.update(done, total); };
  const auto t1 = std::chrono::steady_clock::now();
  const Diagnosis d = diagnose(*m.engine, *m.tokenizer, opts, a.model);
  const double fwd = seconds_since(t1);
  progress.finish();

  const bool json_to_stdout = a.json == "-";
  if (!json_to_stdout) std::cout << render_table(d);
  if (!a.json.empty()) write_json(a.json, to_json(d));
  if (!a.svg.empty()) write_output(a.svg, render_svg(d));
  if (!a.quiet)
    std::cerr << "diagnose: load " << m.seconds << " s, forward " << fwd << " s, total "
              << seconds_since(t0) << " s on " << m.engine->device() << "\n";
}

}  // namespace

void add_diagnose(CLI::App& app) {
  auto a = std::make_shared<DiagnoseCmd>();
  CLI::App* sub = app.add_subcommand(
      "diagnose",
      "Diagnose every attention head: bos_mass (attention on the first token), entropy and local "
      "mass per head, its class (healthy / bos-sink / dead / low-entropy) and the sick band.");
  sub->add_option(
         "MODEL", a->model,
         "checkpoint directory, or hub id org/name[@revision] (downloaded when not cached)")
      ->required();
  add_diagnose_options(sub, a->diag);
  add_device_options(sub, a->dev);
  sub->add_option("--json", a->json,
                  "write the diagnosis as JSON to FILE ('-' = stdout, no table)");
  sub->add_option("--svg", a->svg, "write the heatmap + bos_mass histogram as SVG to FILE");
  sub->add_flag("-q,--quiet", a->quiet, "no progress or timing lines on stderr");
  sub->callback(interruptible([a] { run_diagnose(*a); }));
}

}  // namespace hs::cli
