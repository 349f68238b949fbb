// The golden 3-step surgical run through the device-neutral Surgery interface
// (engine/engine.h), shared by the CPU's test (tests/test_training.cpp) and the GPU's
// (tests/test_cuda_surgery.cpp): the slices right after the reference's re-initialisation, then
// its batches, AdamW and schedule; losses and pre-clip gradient norms within tol relative, the
// final slices within max(tol, 1e-4) of their scale (Adam turns fp32 noise on near-zero gradients
// into visible steps: tests/test_training.cpp) with fp32 weights.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "backend/backend.h"
#include "engine/cpu/train.h"
#include "golden_data.h"
#include "surgery/schedule.h"

namespace hs::test {

inline std::vector<HeadRef> plan_targets(const nlohmann::json& plan) {
  std::vector<HeadRef> t;
  for (auto& [layer, heads] : plan.items())
    for (int h : heads) t.push_back({std::stoi(layer), h});
  return t;
}

// The weights right after the reference's re-initialisation: its full qkv and output-projection
// tensors of the target layers (in the checkpoint's layout) into w.
inline void set_golden_init(const SafetensorsFile& g, const std::set<int>& layers,
                            TrainWeights& w) {
  const ModelConfig& c = w.config;
  for (int l : layers) {
    const std::string p = "surgery.init." + std::to_string(l) + ".";
    w.layers[l][LayerRole::wqkv] =
        from_file_layout(c, LayerRole::wqkv, floats(g, p + "qkv.weight"));
    if (c.linear_bias)
      w.layers[l][LayerRole::bqkv] =
          from_file_layout(c, LayerRole::bqkv, floats(g, p + "qkv.bias"));
    w.layers[l][LayerRole::wo] = floats(g, p + "dense.weight");
  }
}

inline void check_golden_surgery(const std::string& dir, DeviceKind device, double tol) {
  SafetensorsFile g(dir + "/golden.safetensors");
  const auto info = read_json_file(dir + "/golden.json");
  const auto& sc = info["surgery"];
  Model model(dir, ModelOptions{int64_t(1) << 40});
  const ModelConfig& c = model.config();
  const auto targets = plan_targets(sc["plan"]);
  std::set<int> layers;
  for (auto t : targets) layers.insert(t.layer);
  TrainWeights w = TrainWeights::from_model(model);
  set_golden_init(g, layers, w);
  auto s = make_surgery(model, device, "f32", targets, {1e-2, 0.9, 0.999, 1e-8, 0.0}, 1);
  s->set(gather_slices(w, targets), AdamState{});
  const int steps = sc["steps"], accum = sc["grad_accum"];
  const auto ref_losses = floats(g, "surgery.losses");
  for (int k = 0; k < steps; ++k) {
    for (int m = 0; m < accum; ++m) {
      const auto batch = id_rows(g, "surgery.batch." + std::to_string(k) + "." + std::to_string(m));
      const double n = double(batch[0].size() - 1);
      const double l = s->accumulate({&batch[0]}, 1.0 / (n * accum)) * accum;
      EXPECT_NEAR(l, ref_losses[k * accum + m], tol * ref_losses[k * accum + m]) << k << "." << m;
    }
    const double norm = s->step(1e-2 * lr_factor(k, 1, steps), double(sc["clip_norm"]));
    const double ref = floats(g, "surgery.gradnorm." + std::to_string(k))[0];
    EXPECT_LE(std::abs(norm - ref) / ref, tol) << "step " << k;
    std::printf("measured %s: %s step %d grad-norm rel err %.2e\n", dir.c_str(),
                device == DeviceKind::cuda ? "GPU" : "CPU", k, std::abs(norm - ref) / ref);
  }
  scatter_slices(s->masters(), w);
  for (int l : layers) {
    const std::string p = "surgery.final." + std::to_string(l) + ".";
    const auto q = to_file_layout(c, LayerRole::wqkv, w.layers[l][LayerRole::wqkv]);
    EXPECT_LE(rel_err(q, floats(g, p + "qkv.weight")), std::max(tol, 1e-4)) << l;
    EXPECT_LE(rel_err(w.layers[l][LayerRole::wo], floats(g, p + "dense.weight")),
              std::max(tol, 1e-4))
        << l;
  }
}

}  // namespace hs::test
