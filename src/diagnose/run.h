// Running a diagnosis: tokenize the prompts, one forward pass with head statistics, averages and
// spreads over prompts.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "diagnose/diagnosis.h"
#include "engine/cpu/forward.h"
#include "text/tokenizer.h"

namespace hs {

struct DiagnoseOptions {
  std::vector<std::string> prompts;  // empty = the paper's diagnostic prompt
  bool bos = false;                  // prepend <s> (BLOOM's tokenizer adds none)
  Thresholds thresholds;
  std::function<void(int64_t layers_done, int64_t layers)> progress;
};

Diagnosis diagnose(Engine& model, const Tokenizer& tok, const DiagnoseOptions& opts,
                   const std::string& model_name);
// On the CPU, over any weight source (a checkpoint, a run's weights).
inline Diagnosis diagnose(WeightSource& w, const Tokenizer& tok, const DiagnoseOptions& opts,
                          const std::string& model_name) {
  CpuEngine e(w);
  return diagnose(e, tok, opts, model_name);
}

}  // namespace hs
