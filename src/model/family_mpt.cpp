// MPT (model_type "mpt"; HF MptForCausalLM and MosaicML's remote-code MPTForCausalLM, which use
// the same tensor names): MPT-7B/30B and their variants, replit-code-v1-3b. The BLOOM block
// with: no embedding LayerNorm, no biases at all when no_bias (the default), exact GELU, the
// fused qkv stored [Q | K | V], softmax_scale and clip_qkv, logits times logit_scale.
#include <cmath>

#include "model/family.h"

namespace hs {

namespace {

ModelConfig parse(const ConfigKeys& k) {
  ModelConfig c;
  c.hidden = k.require_size({"d_model"}, kMaxHidden);
  c.n_head = k.require_size({"n_heads"}, kMaxHidden);
  c.n_layer = k.require_size({"n_layers"}, kMaxLayers);
  c.vocab = k.require_size({"vocab_size"}, kMaxVocab);
  const double ratio = k.find_number("expansion_ratio").value_or(4.0);
  const double ffn = ratio * double(c.hidden);
  if (!(ratio > 0) || ffn != std::floor(ffn) || ffn > double(kMaxHidden) * 64)
    k.fail("expansion_ratio " + std::to_string(ratio) + " does not give a whole MLP width");
  c.ffn = int64_t(ffn);
  const bool no_bias = k.find_bool("no_bias").value_or(true);
  c.norm_bias = c.linear_bias = !no_bias;
  c.emb_norm = false;
  c.act = Gelu::erf;
  c.qkv_layout = QkvLayout::blocked;
  if (const auto norm = k.find_string("norm_type");
      norm && *norm != "low_precision_layernorm" && *norm != "layernorm")
    k.fail("norm_type '" + *norm +
           "' is not supported (MPT with LayerNorm, low_precision_layernorm, only)");
  if (const auto ffn_type = k.object("ffn_config").find_string("ffn_type");
      ffn_type && *ffn_type != "mptmlp")
    k.fail("ffn_config.ffn_type '" + *ffn_type + "' is not supported (only mptmlp)");

  const ConfigKeys a = k.object("attn_config");
  if (!a.find_bool("alibi").value_or(false))
    k.fail(
        "attn_config.alibi is not true: MPT without ALiBi (learned positions) is not an ALiBi "
        "model and is not supported");
  if (a.find_bool("qk_ln").value_or(false))
    k.fail("attn_config.qk_ln is true: LayerNorm on queries and keys is not supported");
  const int64_t kv = a.find_int({"kv_n_heads"}).value_or(c.n_head);
  if (kv < c.n_head)
    k.fail("attn_config.kv_n_heads " + std::to_string(kv) + " is below n_heads " +
           std::to_string(c.n_head) + ": grouped-query attention is not supported");
  if (kv != c.n_head)
    k.fail("attn_config.kv_n_heads " + std::to_string(kv) + " does not match n_heads " +
           std::to_string(c.n_head));
  // Grouped-query attention with as many key/value heads as heads is multi-head attention.
  if (const auto t = a.find_string("attn_type");
      t && *t != "multihead_attention" && *t != "grouped_query_attention")
    k.fail("attn_config.attn_type '" + *t + "' is not supported (multi-head attention only)");
  if (a.find_bool("prefix_lm").value_or(false))
    k.fail("attn_config.prefix_lm is true: prefix-LM attention is not supported");
  c.alibi_bias_max = a.find_number("alibi_bias_max").value_or(8.0);
  if (!(c.alibi_bias_max > 0)) a.fail("attn_config.alibi_bias_max must be positive");
  if (const auto clip = a.find_number("clip_qkv")) {
    if (!(*clip > 0)) a.fail("attn_config.clip_qkv must be positive or null");
    c.clip_qkv = *clip;
  }
  if (const auto s = a.find_number("softmax_scale")) {
    if (!(*s > 0)) a.fail("attn_config.softmax_scale must be positive or null");
    c.alibi.scale = *s;
  }
  if (const auto& j = k.raw("logit_scale"); j.is_string()) {
    if (j != "inv_sqrt_d_model")
      k.fail("logit_scale " + j.dump() + " is not a number or \"inv_sqrt_d_model\"");
    c.logit_scale = 1.0 / std::sqrt(double(c.hidden));
  } else if (const auto s = k.find_number("logit_scale")) {
    if (!(*s > 0)) k.fail("logit_scale must be positive, a number or \"inv_sqrt_d_model\"");
    c.logit_scale = *s;
  }
  return c;
}

void to_json(const ModelConfig& c, nlohmann::json& j) {
  j["architectures"] = {"MptForCausalLM"};
  j["d_model"] = c.hidden;
  j["n_heads"] = c.n_head;
  j["n_layers"] = c.n_layer;
  j["vocab_size"] = c.vocab;
  if (c.ffn % c.hidden == 0)
    j["expansion_ratio"] = c.ffn / c.hidden;
  else
    j["expansion_ratio"] = double(c.ffn) / double(c.hidden);
  j["no_bias"] = !c.linear_bias;
  nlohmann::json& a = j["attn_config"];
  if (!a.is_object()) a = nlohmann::json::object();
  a["alibi"] = true;
  a["alibi_bias_max"] = c.alibi_bias_max;
  a["clip_qkv"] = c.clip_qkv > 0 ? nlohmann::json(c.clip_qkv) : nlohmann::json(nullptr);
  a["softmax_scale"] = c.alibi.scale > 0 ? nlohmann::json(c.alibi.scale) : nlohmann::json(nullptr);
  // logit_scale is left as the base wrote it ("inv_sqrt_d_model" or a number) unless absent.
  if (!j.contains("logit_scale"))
    j["logit_scale"] = c.logit_scale != 1 ? nlohmann::json(c.logit_scale) : nlohmann::json(nullptr);
}

}  // namespace

const FamilySpec& mpt_family() {
  static const FamilySpec spec{
      parse,
      to_json,
      {{"wte.weight", nullptr, nullptr, "norm_f.weight", "norm_f.bias", "lm_head.weight"},
       {"blocks.{}.norm_1.weight", "blocks.{}.norm_1.bias", "blocks.{}.attn.Wqkv.weight",
        "blocks.{}.attn.Wqkv.bias", "blocks.{}.attn.out_proj.weight",
        "blocks.{}.attn.out_proj.bias", "blocks.{}.norm_2.weight", "blocks.{}.norm_2.bias",
        "blocks.{}.ffn.up_proj.weight", "blocks.{}.ffn.up_proj.bias",
        "blocks.{}.ffn.down_proj.weight", "blocks.{}.ffn.down_proj.bias"}}};
  return spec;
}

}  // namespace hs
