// headsurgeon plan DIAGNOSIS.json -o plan.json: choose the surgery's targets from a diagnosis.
#include <cstdio>
#include <iostream>

#include "cli/common.h"
#include "surgery/plan.h"
#include "util/error.h"

namespace hs::cli {

void add_plan(CLI::App& app) {
  struct Args {
    std::string diagnosis, out, band = "auto", after;
    int pass = 1;
    bool all_sick = false;
    std::vector<int> extra;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "plan",
      "Choose target heads from a diagnosis (diagnose --json): the sick heads of the sick band "
      "(pass 1), those outside it (pass 2), or all; healthy heads of the target columns are "
      "recorded in frozen_watch to be watched for drift. Prints what it chose and why.");
  sub->add_option("DIAGNOSIS", a->diagnosis, "diagnosis JSON from `headsurgeon diagnose --json`")
      ->required();
  sub->add_option("-o,--out", a->out, "plan JSON to write ('-' = stdout)")->required();
  sub->add_option("--band", a->band, "auto (detected) or A-B (head indices, inclusive)")
      ->capture_default_str();
  sub->add_option(
         "--pass", a->pass,
         "1: sick heads in the band; 2: sick heads outside it (pass 1's band, see --after)")
      ->check(CLI::IsMember({1, 2}))
      ->capture_default_str();
  sub->add_option("--after", a->after,
                  "pass 2: the plan pass 1 ran (RUN/plan.json); its band is the one pass 2 plans "
                  "around. Default: the plan of the run whose checkpoint was diagnosed (RUN/best, "
                  "RUN/final, RUN/checkpoints/step-N), else the band this diagnosis shows");
  sub->add_flag("--all-sick", a->all_sick, "every sick head, band or not");
  sub->add_option("--extra-columns", a->extra,
                  "also operate on every head of these indices, healthy ones too (repeatable)");
  sub->callback([a] {
    const nlohmann::json j = read_json_file(a->diagnosis);
    check_output_path(a->out);
    const Diagnosis d = diagnosis_from_json(j, a->diagnosis);
    PlanOptions o;
    o.mode = a->all_sick    ? PlanOptions::Mode::AllSick
             : a->pass == 2 ? PlanOptions::Mode::Pass2
                            : PlanOptions::Mode::Band;
    if (a->band != "auto") {
      int lo = -1, hi = -1;
      char dash = 0, extra = 0;
      if (std::sscanf(a->band.c_str(), "%d%c%d%c", &lo, &dash, &hi, &extra) != 3 || dash != '-' ||
          lo < 0 || hi < lo || hi >= d.heads)
        throw Error("--band",
                    "'" + a->band + "' is not A-B with 0 <= A <= B < " + std::to_string(d.heads));
      o.band = std::pair{lo, hi};
    }
    if (!a->after.empty() && o.mode != PlanOptions::Mode::Pass2)
      throw Error("--after",
                  "only with --pass 2, without --all-sick (it gives pass 2 the band of pass 1)");
    if (!a->after.empty() && o.band)
      throw Error("--after", "cannot be combined with --band (both give pass 2 its band)");
    // Pass 1 heals its band, so a diagnosis of its result shows none: take pass 1's from its plan.
    if (o.mode == PlanOptions::Mode::Pass2 && !o.band) {
      const std::string p1 = a->after.empty() ? run_plan_of_checkpoint(d.model) : a->after;
      if (!p1.empty()) {
        const Plan first = Plan::from_json(read_json_file(p1), p1, d.layers, d.heads);
        if (!first.band)
          throw Error(p1,
                      "this pass-1 plan records no band (made with --all-sick, --extra-columns "
                      "alone or by hand): give pass 2 --band A-B");
        o.pass1_band = first.band;
        o.pass1_plan = p1;
      }
    }
    o.extra_columns = a->extra;
    const Plan p = make_plan(d, o);
    write_json(a->out, p.to_json());
    if (a->out == "-") return;
    size_t n = 0, w = 0;
    for (const auto& [l, hs] : p.targets) n += hs.size();
    for (const auto& [l, hs] : p.frozen_watch) w += hs.size();
    std::cout << "plan: " << n << " target heads in " << p.targets.size() << " layers (" << p.reason
              << "); " << w << " healthy heads watched for drift\n";
    for (const auto& [l, hs] : p.targets) {
      std::cout << "  layer " << l << ":";
      for (int h : hs) std::cout << " H" << h << "(" << class_name(d.class_of(l, h)) << ")";
      std::cout << "\n";
    }
    if (o.mode == PlanOptions::Mode::Pass2) {
      int left = 0;
      for (int l = 0; l < d.layers; ++l)
        for (int h = p.band->first; h <= p.band->second; ++h) left += is_sick(d.class_of(l, h));
      if (left)
        std::cout << "note: " << left << " sick heads inside the band are left to pass 1 (plan "
                  << "--band " << p.band->first << "-" << p.band->second << ") or --all-sick\n";
    }
    std::cout << "wrote " << a->out << "\n";
  });
}

}  // namespace hs::cli
