// Writing a Hugging Face checkpoint directory that transformers (and headsurgeon) load back.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "io/dtype.h"
#include "model/train.h"

namespace hs {

// DIR gets config.json (base config with BLOOM keys set), model.safetensors in `dtype` with
// "transformer."-prefixed names, and a copy of tokenizer_path (when it exists). Atomic: written
// to DIR.tmp-PID, then swapped in; an existing DIR is replaced only once the new one is
// complete. A tensor that was not changed round-trips to the identical bytes (fp32 holds every
// bf16/f16 value exactly).
void save_checkpoint(const std::string& dir, const TrainWeights& w,
                     const nlohmann::json& base_config, DType dtype,
                     const std::string& tokenizer_path);

}  // namespace hs
