// A diagnosis as `diagnose --json` writes it (the input is the file), read as plan, drift and
// report read it. An accepted diagnosis must go through everything those commands do with it
// without any error but the documented "nothing to plan": the table, the SVG, the plans of each
// mode (readable back as plans), the drift against itself, and writing it back as JSON, which
// must read back the same.
#include "diagnose/drift.h"
#include "fuzz_common.h"
#include "surgery/plan.h"
#include "util/files.h"

using namespace hs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::fs::path path = fuzz::input_file("diagnosis.json", data, size);
  std::optional<Diagnosis> d;
  fuzz::expect_clean(
      [&] { d = diagnosis_from_json(read_json_file(path.string()), path.string()); });
  if (!d) return 0;

  render_table(*d);
  render_svg(*d);
  const std::string written = to_json(*d).dump();
  const Diagnosis again = diagnosis_from_json(nlohmann::json::parse(written), "written diagnosis");
  if (again.model != d->model || again.family != d->family || again.prompts != d->prompts ||
      again.tokens != d->tokens || again.slopes != d->slopes || again.bos != d->bos ||
      again.metrics.size() != d->metrics.size())
    fuzz::fail("a diagnosis written back reads as another: " + written);
  for (size_t k = 0; k < d->metrics.size(); ++k)
    if (again.metrics[k].bos_mass != d->metrics[k].bos_mass ||
        again.metrics[k].entropy != d->metrics[k].entropy ||
        again.metrics[k].local_mass != d->metrics[k].local_mass)
      fuzz::fail("a diagnosis written back has other metrics: " + written);

  for (const auto mode :
       {PlanOptions::Mode::Band, PlanOptions::Mode::Pass2, PlanOptions::Mode::AllSick})
    fuzz::expect_clean([&] {
      PlanOptions o;
      o.mode = mode;
      const Plan p = make_plan(*d, o);
      Plan::from_json(nlohmann::json::parse(p.to_json().dump()), "written plan", d->layers,
                      d->heads);
    });
  DriftOptions o;
  o.targets = std::map<int, std::vector<int>>{{0, {0}}};
  const Drift drift = compute_drift(*d, again, o);
  render_drift_table(drift);
  render_drift_svg(*d, again, drift);
  return 0;
}
