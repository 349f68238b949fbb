// A surgery plan (the input is the file), validated against a model of 6 layers x 16 heads (the
// demo model's shape) as repair does. An accepted plan must read back the same once written.
#include "fuzz_common.h"
#include "surgery/plan.h"
#include "util/files.h"

using namespace hs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::fs::path path = fuzz::input_file("plan.json", data, size);
  std::optional<Plan> plan;
  fuzz::expect_clean(
      [&] { plan = Plan::from_json(read_json_file(path.string()), path.string(), 6, 16); });
  if (!plan) return 0;
  const Plan again =
      Plan::from_json(nlohmann::json::parse(plan->to_json().dump()), "written plan", 6, 16);
  if (again.targets != plan->targets || again.frozen_watch != plan->frozen_watch ||
      again.band != plan->band || again.bos != plan->bos || again.reason != plan->reason)
    fuzz::fail("a plan written back reads as another plan: " + plan->to_json().dump());
  return 0;
}
