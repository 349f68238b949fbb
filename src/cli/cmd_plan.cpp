// headsurgeon plan DIAGNOSIS.json -o plan.json: choose the surgery's targets from a diagnosis.
#include <cstdio>
#include <iostream>

#include "cli/common.h"
#include "surgery/plan.h"
#include "util/error.h"

namespace hs::cli {

void add_plan(CLI::App& app) {
  struct Args {
    std::string diagnosis, out, band = "auto";
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
  sub->add_option("--pass", a->pass, "1: sick heads in the band; 2: sick heads outside it")
      ->check(CLI::IsMember({1, 2}))
      ->capture_default_str();
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
    std::cout << "wrote " << a->out << "\n";
  });
}

}  // namespace hs::cli
