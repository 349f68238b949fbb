// A repair run directory as `report` reads it: the input split at the file separator gives, in
// order, config.json, plan.json, trajectory.json, diagnosis_before.json, diagnoses/step-19.json
// and diagnoses/step-38.json (an empty or missing part: the file is absent; the seeds are a
// real run of golden tiny8 evaluated at steps 19 and 38). The run is reported alone and as two
// passes.
#include "fuzz_common.h"
#include "report/run_report.h"

using namespace hs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto files = fuzz::split_files(data, size);
  const fuzz::fs::path run = fuzz::scratch_dir() / "run";
  fuzz::fs::create_directories(run);
  const char* names[] = {"config.json",
                         "plan.json",
                         "trajectory.json",
                         "diagnosis_before.json",
                         "diagnoses/step-19.json",
                         "diagnoses/step-38.json"};
  for (size_t i = 0; i < std::min(files.size(), std::size(names)); ++i)
    if (!files[i].empty()) fuzz::write_file(run / names[i], files[i]);
  bool ok = false;
  fuzz::expect_clean([&] {
    render_run_report({run.string()});
    ok = true;
  });
  // A run that reports alone reports as both passes of a surgery too.
  if (ok) render_run_report({run.string(), run.string()});
  return 0;
}
