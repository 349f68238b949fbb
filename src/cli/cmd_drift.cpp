// headsurgeon drift BEFORE AFTER: how much every head's attention on the first token moved
// between two diagnoses (files, or models diagnosed here), grouped by the surgical zone.
#include <filesystem>
#include <iostream>

#include "cli/common.h"
#include "cli/diagnose_args.h"
#include "cli/model_loading.h"
#include "diagnose/drift.h"
#include "surgery/plan.h"
#include "util/error.h"

namespace hs::cli {

namespace {

struct DriftArgs {
  std::string before, after, plan, json, svg;
  double threshold = 0.05;
  DiagnoseArgs diag;
  DeviceArgs dev;
  bool quiet = false;
};

// A diagnosis JSON file as `diagnose --json` writes it, else a model diagnosed now.
Diagnosis load_diagnosis(const std::string& spec, const DriftArgs& a) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(spec, ec) || spec.ends_with(".json"))
    return diagnosis_from_json(read_json_file(spec), spec);
  DiagnoseOptions opts = diagnose_options(a.diag);
  LoadedModel m = load_model(spec, true, /*stream=*/true, a.dev);
  Progress progress("drift: diagnosing " + spec + ", layer", !a.quiet);
  opts.progress = [&](int64_t done, int64_t total) { progress.update(done, total); };
  Diagnosis d = diagnose(*m.engine, *m.tokenizer, opts, spec);
  progress.finish();
  return d;
}

void run_drift(const DriftArgs& a) {
  check_output_path(a.json);
  check_output_path(a.svg);
  // Read the plan before the (possibly long) diagnoses, validate it once the shape is known.
  const nlohmann::json plan_json = a.plan.empty() ? nlohmann::json() : read_json_file(a.plan);
  const Diagnosis before = load_diagnosis(a.before, a);
  const Diagnosis after = load_diagnosis(a.after, a);
  DriftOptions o;
  o.threshold = a.threshold;
  o.before_name = a.before;
  o.after_name = a.after;
  if (!a.plan.empty())
    o.targets = Plan::from_json(plan_json, a.plan, before.layers, before.heads).targets;
  if (!a.quiet && (before.prompts != after.prompts || before.bos != after.bos))
    std::cerr << "drift: warning: " << a.before << " and " << a.after
              << " were diagnosed on different prompts or --bos settings\n";
  const Drift d = compute_drift(before, after, o);
  if (a.json != "-") std::cout << render_drift_table(d);
  if (!a.json.empty()) write_json(a.json, to_json(d));
  if (!a.svg.empty()) write_output(a.svg, render_drift_svg(before, after, d));
}

}  // namespace

void add_drift(CLI::App& app) {
  auto a = std::make_shared<DriftArgs>();
  CLI::App* sub = app.add_subcommand(
      "drift",
      "Redistribution between two diagnoses: per head δ = bos_after − bos_before; heads drifting, "
      "mean |δ| and worst case outside the surgical zone, frozen inside it, per head-index "
      "column; heads that changed class.");
  sub->add_option("BEFORE", a->before,
                  "diagnosis JSON (diagnose --json), or a model diagnosed now (checkpoint "
                  "directory or hub id)")
      ->required();
  sub->add_option("AFTER", a->after, "the same for the model after surgery")->required();
  sub->add_option("--plan", a->plan,
                  "plan JSON: its targets define the zone (target head indices x target layers); "
                  "without it every head counts as outside");
  sub->add_option("--threshold", a->threshold, "a head drifts when |δ| > this")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--json", a->json, "write the result as JSON to FILE ('-' = stdout, no table)");
  sub->add_option("--svg", a->svg, "write the before/after and δ heatmaps as SVG to FILE");
  add_diagnose_options(sub, a->diag);
  add_device_options(sub, a->dev);
  sub->add_flag("-q,--quiet", a->quiet, "no progress or warning lines on stderr");
  sub->callback(interruptible([a] { run_drift(*a); }));
}

}  // namespace hs::cli
