#include "model/roles.h"

#include "model/family.h"

namespace hs {

namespace {

constexpr const char* kModelRoleNames[kModelRoles] = {"tok_emb",  "emb_norm",   "emb_norm_b",
                                                      "out_norm", "out_norm_b", "lm_head"};
constexpr const char* kLayerRoleNames[kLayerRoles] = {
    "attn_norm", "attn_norm_b", "wqkv",   "bqkv",     "wo",       "bo",
    "ffn_norm",  "ffn_norm_b",  "ffn_up", "ffn_up_b", "ffn_down", "ffn_down_b"};

std::string with_layer(const char* pattern, int64_t layer) {
  std::string s = pattern;
  s.replace(s.find("{}"), 2, std::to_string(layer));
  return s;
}

}  // namespace

const char* role_name(ModelRole r) { return kModelRoleNames[int(r)]; }
const char* role_name(LayerRole r) { return kLayerRoleNames[int(r)]; }

bool role_present(const ModelConfig& c, ModelRole r) {
  switch (r) {
    case ModelRole::tok_emb:
    case ModelRole::out_norm:
      return true;
    case ModelRole::emb_norm:
      return c.emb_norm;
    case ModelRole::emb_norm_b:
      return c.emb_norm && c.norm_bias;
    case ModelRole::out_norm_b:
      return c.norm_bias;
    case ModelRole::lm_head:
      return !c.tied_head;
  }
  return false;
}

bool role_present(const ModelConfig& c, LayerRole r) {
  switch (r) {
    case LayerRole::attn_norm_b:
    case LayerRole::ffn_norm_b:
      return c.norm_bias;
    case LayerRole::bqkv:
    case LayerRole::bo:
    case LayerRole::ffn_up_b:
    case LayerRole::ffn_down_b:
      return c.linear_bias;
    default:
      return true;
  }
}

std::vector<int64_t> role_shape(const ModelConfig& c, ModelRole r) {
  if (role_is_matrix(r)) return {c.vocab, c.hidden};
  return {c.hidden};
}

std::vector<int64_t> role_shape(const ModelConfig& c, LayerRole r) {
  const int64_t d = c.hidden;
  switch (r) {
    case LayerRole::wqkv:
      return {3 * d, d};
    case LayerRole::bqkv:
      return {3 * d};
    case LayerRole::wo:
      return {d, d};
    case LayerRole::ffn_up:
      return {c.ffn, d};
    case LayerRole::ffn_up_b:
      return {c.ffn};
    case LayerRole::ffn_down:
      return {d, c.ffn};
    default:
      return {d};
  }
}

int64_t role_numel(const ModelConfig& c, ModelRole r) {
  int64_t n = 1;
  for (int64_t s : role_shape(c, r)) n *= s;
  return n;
}

int64_t role_numel(const ModelConfig& c, LayerRole r) {
  int64_t n = 1;
  for (int64_t s : role_shape(c, r)) n *= s;
  return n;
}

std::string tensor_name(const ModelConfig& c, ModelRole r) {
  return family_spec(c.family).names.model[int(r)];
}

std::string tensor_name(const ModelConfig& c, LayerRole r, int64_t layer) {
  return with_layer(family_spec(c.family).names.layer[int(r)], layer);
}

std::string hf_tensor_name(const ModelConfig& c, ModelRole r) {
  return r == ModelRole::lm_head ? tensor_name(c, r) : kBasePrefix + tensor_name(c, r);
}

std::string hf_tensor_name(const ModelConfig& c, LayerRole r, int64_t layer) {
  return kBasePrefix + tensor_name(c, r, layer);
}

const FamilyTensorNames& family_tensor_names(Family f) { return family_spec(f).names; }

std::vector<TensorRef> model_tensors(const ModelConfig& c) {
  std::vector<TensorRef> out;
  auto add = [&](ModelRole r) {
    if (role_present(c, r)) out.push_back({false, r, LayerRole::wqkv, -1});
  };
  add(ModelRole::tok_emb);
  add(ModelRole::emb_norm);
  add(ModelRole::emb_norm_b);
  for (int64_t l = 0; l < c.n_layer; ++l)
    for (int r = 0; r < kLayerRoles; ++r)
      if (role_present(c, LayerRole(r))) out.push_back({true, ModelRole::tok_emb, LayerRole(r), l});
  add(ModelRole::out_norm);
  add(ModelRole::out_norm_b);
  add(ModelRole::lm_head);
  return out;
}

bool role_present(const ModelConfig& c, const TensorRef& t) {
  return t.per_layer ? role_present(c, t.layer_role) : role_present(c, t.model_role);
}
std::vector<int64_t> role_shape(const ModelConfig& c, const TensorRef& t) {
  return t.per_layer ? role_shape(c, t.layer_role) : role_shape(c, t.model_role);
}
bool role_is_matrix(const TensorRef& t) {
  return t.per_layer ? role_is_matrix(t.layer_role) : role_is_matrix(t.model_role);
}
std::string hf_tensor_name(const ModelConfig& c, const TensorRef& t) {
  return t.per_layer ? hf_tensor_name(c, t.layer_role, t.layer) : hf_tensor_name(c, t.model_role);
}

}  // namespace hs
