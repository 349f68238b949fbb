// headsurgeon demo: diagnose -> plan -> repair -> diagnose again on the built-in demo model.
#include <filesystem>
#include <iostream>

#include "cli/common.h"
#include "demo/demo.h"

namespace hs::cli {

void add_demo(CLI::App& app) {
  auto o = std::make_shared<DemoOptions>();
  o->model = HS_SOURCE_DIR "/models/demo";
  o->out_dir = "out/demo";
  auto json = std::make_shared<std::string>();
  auto no_control = std::make_shared<bool>(false);
  CLI::App* sub = app.add_subcommand(
      "demo",
      "The whole story in a few minutes of CPU on the built-in demo model (a small BLOOM whose "
      "heads collapse onto the first token, see docs/demo-model.md): diagnose, plan the band, "
      "repair (re-initialise + train only the target heads), diagnose again; beside it the "
      "gradient-only control (same masks, no re-initialisation). Prints a before/after table "
      "and writes SVG heatmaps, diagnoses, the plan and both run directories to --out.");
  sub->add_option("--model", o->model, "demo checkpoint (needs MODEL/corpus, MODEL/heldout.txt)")
      ->capture_default_str();
  sub->add_option("-o,--out", o->out_dir, "output folder")->capture_default_str();
  sub->add_option("--json", *json, "write the result as JSON to FILE ('-' = stdout)");
  sub->add_option("--epochs", o->epochs, "repair epochs over the demo corpus")
      ->capture_default_str();
  sub->add_option("--lr", o->lr, "repair learning rate (the tiny model wants more than 5e-5)")
      ->capture_default_str();
  sub->add_option("--seed", o->seed, "seed of re-initialisation and shuffling")
      ->capture_default_str();
  sub->add_flag("--no-control", *no_control, "skip the gradient-only control run");
  sub->add_flag("-q,--quiet", o->quiet, "no progress lines");
  sub->callback(interruptible([o, json, no_control] {
    std::filesystem::create_directories(o->out_dir);  // --json usually points inside it
    check_output_path(*json);
    o->control = !*no_control;
    const DemoResult r = run_demo(*o);
    if (*json != "-") {
      std::cout << r.render_table();
      std::cout << "figures: " << r.out_dir << "/{before,surgery"
                << (r.has_control ? ",control" : "") << "}.svg\n";
    }
    if (!json->empty()) write_json(*json, r.to_json());
  }));
}

}  // namespace hs::cli
