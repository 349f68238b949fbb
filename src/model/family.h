// What each family contributes (family_bloom.cpp, family_mpt.cpp, family_falcon.cpp): how its
// config.json reads and writes, and what its tensors are called. Adding a family is adding one
// such file and its line in config.cpp.
#pragma once

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/config_keys.h"
#include "model/roles.h"

namespace hs {

// Sanity bounds, far above any real model (BLOOM-176B: hidden 14336, 70 layers), that keep shape
// arithmetic (ffn * hidden, vocab * hidden, per-layer loops) clear of overflow.
constexpr int64_t kMaxHidden = int64_t(1) << 20;
constexpr int64_t kMaxLayers = int64_t(1) << 16;
constexpr int64_t kMaxVocab = (int64_t(1) << 31) - 1;  // token ids are int32

struct FamilySpec {
  // The family's keys into a config (sizes and conventions; token ids, tie_word_embeddings and
  // layer_norm_epsilon are common and read by ModelConfig::from_json).
  ModelConfig (*parse)(const ConfigKeys& k);
  // Sets the family's keys of c on j (the base config of the model being written).
  void (*to_json)(const ModelConfig& c, nlohmann::json& j);
  FamilyTensorNames names;
};

const FamilySpec& bloom_family();
const FamilySpec& mpt_family();
const FamilySpec& falcon_family();
const FamilySpec& family_spec(Family f);

}  // namespace hs
