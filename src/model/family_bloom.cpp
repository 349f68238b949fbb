// BLOOM (model_type "bloom", HF BloomForCausalLM): the reference family.
#include "model/family.h"

namespace hs {

namespace {

ModelConfig parse(const ConfigKeys& k) {
  ModelConfig c;
  c.hidden = k.require_size({"hidden_size", "n_embed"}, kMaxHidden);
  c.n_head = k.require_size({"n_head", "num_attention_heads"}, kMaxHidden);
  c.n_layer = k.require_size({"n_layer", "num_hidden_layers"}, kMaxLayers);
  c.vocab = k.require_size({"vocab_size"}, kMaxVocab);
  c.ffn = 4 * c.hidden;
  c.post_ln = k.find_bool("apply_residual_connection_post_layernorm").value_or(false);
  return c;  // the defaults of ModelConfig are BLOOM's conventions
}

void to_json(const ModelConfig& c, nlohmann::json& j) {
  // HF lets an alias override the canonical key, so a stale alias must not survive.
  for (const char* k : {"n_embed", "num_attention_heads", "num_hidden_layers"}) j.erase(k);
  j["architectures"] = {"BloomForCausalLM"};
  j["hidden_size"] = c.hidden;
  j["n_head"] = c.n_head;
  j["n_layer"] = c.n_layer;
  j["vocab_size"] = c.vocab;
  j["apply_residual_connection_post_layernorm"] = c.post_ln;
}

}  // namespace

const FamilySpec& bloom_family() {
  static const FamilySpec spec{
      parse,
      to_json,
      {{"word_embeddings.weight", "word_embeddings_layernorm.weight",
        "word_embeddings_layernorm.bias", "ln_f.weight", "ln_f.bias", "lm_head.weight"},
       {"h.{}.input_layernorm.weight", "h.{}.input_layernorm.bias",
        "h.{}.self_attention.query_key_value.weight", "h.{}.self_attention.query_key_value.bias",
        "h.{}.self_attention.dense.weight", "h.{}.self_attention.dense.bias",
        "h.{}.post_attention_layernorm.weight", "h.{}.post_attention_layernorm.bias",
        "h.{}.mlp.dense_h_to_4h.weight", "h.{}.mlp.dense_h_to_4h.bias",
        "h.{}.mlp.dense_4h_to_h.weight", "h.{}.mlp.dense_4h_to_h.bias"}}};
  return spec;
}

}  // namespace hs
