// The tensors of a model by role (like llama.cpp's per-architecture tensor tables): each family
// names its tensors differently, the rest of the program speaks roles. The table of every
// family (names, which roles it has) is in family_*.cpp; shapes follow from the config alone.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace hs {

// Once per model. The order is the checkpoint order of the training weights (and of the random
// draws of pretraining): token embedding, its norm, [the layers], final norm, untied head.
enum class ModelRole : uint8_t { tok_emb, emb_norm, emb_norm_b, out_norm, out_norm_b, lm_head };
constexpr int kModelRoles = 6;
// Once per layer, in the order the block uses them.
enum class LayerRole : uint8_t {
  attn_norm,
  attn_norm_b,
  wqkv,
  bqkv,
  wo,
  bo,
  ffn_norm,
  ffn_norm_b,
  ffn_up,
  ffn_up_b,
  ffn_down,
  ffn_down_b
};
constexpr int kLayerRoles = 12;

// "wqkv", "attn_norm_b", ... for messages.
const char* role_name(ModelRole r);
const char* role_name(LayerRole r);

// Whether this config has the tensor (biases, norms and the head are optional).
bool role_present(const ModelConfig& c, ModelRole r);
bool role_present(const ModelConfig& c, LayerRole r);
// Its shape: [rows, cols] for matrices, [n] for vectors.
std::vector<int64_t> role_shape(const ModelConfig& c, ModelRole r);
std::vector<int64_t> role_shape(const ModelConfig& c, LayerRole r);
// A LayerNorm's weight (initialised to 1; its bias and every linear bias to 0).
inline bool role_is_norm_weight(ModelRole r) {
  return r == ModelRole::emb_norm || r == ModelRole::out_norm;
}
inline bool role_is_norm_weight(LayerRole r) {
  return r == LayerRole::attn_norm || r == LayerRole::ffn_norm;
}
// Elements of the tensor: the product of its shape.
int64_t role_numel(const ModelConfig& c, ModelRole r);
int64_t role_numel(const ModelConfig& c, LayerRole r);
// Matrices are stored in the weight type on a GPU and decayed in pretraining; vectors stay fp32.
inline bool role_is_matrix(ModelRole r) {
  return r == ModelRole::tok_emb || r == ModelRole::lm_head;
}
inline bool role_is_matrix(LayerRole r) {
  return r == LayerRole::wqkv || r == LayerRole::wo || r == LayerRole::ffn_up ||
         r == LayerRole::ffn_down;
}

// Whether the checkpoint stores the tensor's rows in another order than the internal one (MPT's
// fused qkv weight and bias, ops/qkv_layout.h): it is then permuted when read and written.
inline bool role_permuted(const ModelConfig& c, LayerRole r) {
  return c.qkv_layout != QkvLayout::per_head && (r == LayerRole::wqkv || r == LayerRole::bqkv);
}

// The family's name of the tensor, relative to the base model ("h.3.mlp.dense_h_to_4h.weight",
// "blocks.0.attn.Wqkv.weight"); the untied head is the top-level "lm_head.weight".
std::string tensor_name(const ModelConfig& c, ModelRole r);
std::string tensor_name(const ModelConfig& c, LayerRole r, int64_t layer);
// The name as written to a checkpoint: prefixed with the base model's "transformer." (the form
// recent transformers versions write), except the top-level head.
std::string hf_tensor_name(const ModelConfig& c, ModelRole r);
std::string hf_tensor_name(const ModelConfig& c, LayerRole r, int64_t layer);
constexpr const char* kBasePrefix = "transformer.";

// One tensor of a model: a model role, or a layer role of one layer.
struct TensorRef {
  bool per_layer;
  ModelRole model_role;  // when !per_layer
  LayerRole layer_role;  // when per_layer
  int64_t layer;         // when per_layer
};
// Every tensor the config has, in checkpoint order: token embedding, its norm, the layers (in
// LayerRole order), final norm, untied head. The order of written checkpoints, of the training
// weights and of pretraining's random draws.
std::vector<TensorRef> model_tensors(const ModelConfig& c);
bool role_present(const ModelConfig& c, const TensorRef& t);
std::vector<int64_t> role_shape(const ModelConfig& c, const TensorRef& t);
bool role_is_matrix(const TensorRef& t);
std::string hf_tensor_name(const ModelConfig& c, const TensorRef& t);

// The names of one family (family_*.cpp): per role the name, nullptr where the family never has
// that tensor. Layer names hold "{}" where the layer index goes.
struct FamilyTensorNames {
  const char* model[kModelRoles];
  const char* layer[kLayerRoles];
};
const FamilyTensorNames& family_tensor_names(Family f);

}  // namespace hs
