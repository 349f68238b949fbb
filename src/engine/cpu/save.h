// Writing a Hugging Face checkpoint directory that transformers (and headsurgeon) load back.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "engine/cpu/train.h"
#include "io/dtype.h"

namespace hs {

// DIR gets config.json (the family's keys set on base_config), model.safetensors with the
// family's "transformer."-prefixed names (model/roles.h) in the checkpoint layout of each
// tensor, each tensor in the dtype it has in `like` (the checkpoint the weights came from), or
// in `dtype` when like is null, and a copy of tokenizer_path (when it exists). Atomic: written
// to DIR.tmp-PID, then swapped in; an existing DIR is replaced only once the new one is
// complete. A tensor that was not changed round-trips to the identical bytes (fp32 holds every
// bf16/f16 value exactly).
void save_checkpoint(const std::string& dir, const TrainWeights& w,
                     const nlohmann::json& base_config, const Checkpoint* like, DType dtype,
                     const std::string& tokenizer_path);

}  // namespace hs
