// headsurgeon demo: diagnose -> plan -> repair -> diagnose again on the built-in demo model, in
// the paper's two passes.
#include <filesystem>
#include <iostream>

#include "cli/common.h"
#include "cli/model_loading.h"
#include "demo/demo.h"

namespace hs::cli {

void add_demo(CLI::App& app) {
  auto o = std::make_shared<DemoOptions>();
  o->model = HS_SOURCE_DIR "/models/demo";
  o->out_dir = "out/demo";
  auto json = std::make_shared<std::string>();
  auto no_control = std::make_shared<bool>(false);
  auto dev = std::make_shared<DeviceArgs>();
  CLI::App* sub = app.add_subcommand(
      "demo",
      "The whole story in a few minutes of CPU on the built-in demo model (a small BLOOM whose "
      "heads collapse onto the first token, see docs/demo-model.md), in the paper's two passes. "
      "Pass 1: diagnose, plan the band, repair (re-initialise + train only the target heads), "
      "diagnose again; beside it the gradient-only control (same masks, no re-initialisation). "
      "Pass 2: the sick heads outside the band, repaired on pass 1's best checkpoint. Prints a "
      "table of the stages and writes SVG heatmaps, diagnoses, plans and the run directories "
      "to --out.");
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
  sub->add_option("--passes", o->passes,
                  "1: the band only; 2: then the sick heads outside it, on pass 1's best "
                  "checkpoint")
      ->check(CLI::IsMember({1, 2}))
      ->capture_default_str();
  add_device_options(sub, *dev);
  sub->add_flag("-q,--quiet", o->quiet, "no progress lines");
  sub->callback(interruptible([o, json, no_control, dev] {
    o->device = dev->device;
    o->gpu_dtype = dev->gpu_dtype;
    o->device_from = dev->device_from;
    std::filesystem::create_directories(o->out_dir);  // --json usually points inside it
    check_output_path(*json);
    o->control = !*no_control;
    const DemoResult r = run_demo(*o);
    if (*json != "-") {
      std::cout << r.render_table();
      if (r.has_pass2 && r.pass2.targets)
        std::cout << "pass 2 repaired " << r.out_dir << "/surgery/best, pass 1's best checkpoint\n";
      std::cout << "figures: " << r.out_dir << "/{before,surgery"
                << (r.has_control ? ",control" : "")
                << (r.has_pass2 && r.pass2.targets ? ",pass2" : "") << "}.svg\n";
    }
    if (!json->empty()) write_json(*json, r.to_json());
  }));
}

}  // namespace hs::cli
