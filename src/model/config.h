// One family-neutral description of a model, parsed from a Hugging Face config.json by its
// family (model_type): sizes, which optional parts exist, and each numeric convention the
// families differ in (docs/numerics.md). The rest of the program reads this, never a family's
// own keys.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "ops/alibi.h"
#include "ops/gelu.h"
#include "ops/qkv_layout.h"

namespace hs {

enum class Family : uint8_t { bloom, mpt, falcon };
// "bloom", "mpt", "falcon": the model_type each is read from.
const char* family_name(Family f);

struct ModelConfig {
  Family family = Family::bloom;
  int64_t hidden = 0, n_head = 0, n_layer = 0, vocab = 0;
  int64_t ffn = 0;  // MLP width (4 * hidden for BLOOM)
  double ln_eps = 1e-5;
  bool norm_bias = true;    // LayerNorms have a bias (not MPT with no_bias)
  bool linear_bias = true;  // qkv, output projection and MLP have biases
  bool emb_norm = true;     // a LayerNorm right after the embedding (BLOOM only)
  bool post_ln = false;     // BLOOM's apply_residual_connection_post_layernorm
  Gelu act = Gelu::tanh;
  double alibi_bias_max = 8;  // B in the slope formula (MPT's alibi_bias_max)
  AlibiParams alibi;          // softmax scale and where the bias enters
  double clip_qkv = 0;        // clamp the fused qkv output to [-c, c]; 0 = off (MPT)
  double logit_scale = 1;     // logits multiplied by this (MPT)
  bool tied_head = true;      // lm_head is the token embedding (else its own lm_head.weight)
  QkvLayout qkv_layout = QkvLayout::per_head;  // how the checkpoint stores the fused qkv rows
  int64_t bos_id = 1, eos_id = 2, pad_id = 3, unk_id = 0;

  int64_t head_dim() const { return hidden / n_head; }

  // Dispatches on model_type (absent: bloom), validates (positive sizes, heads dividing hidden,
  // types) and refuses variants headsurgeon does not implement, in one line naming the key and
  // why. Errors name `path`.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& path);
  // The config.json to write: the family's keys set from this config on top of `base` (every
  // other key of base kept).
  nlohmann::json to_json(const nlohmann::json& base = nlohmann::json::object()) const;
};

// A BLOOM config of the given sizes (pretraining, tests).
ModelConfig bloom_config(int64_t hidden, int64_t n_head, int64_t n_layer, int64_t vocab,
                         bool post_ln = false);

}  // namespace hs
