// Falcon-RW (model_type "falcon" with alibi true, sequential attention and MLP, one key/value
// per head: tiiuae/falcon-rw-1b and -7b; HF FalconForCausalLM). The BLOOM block with: no
// embedding LayerNorm, exact GELU, and the ALiBi bias added before the 1/sqrt(hd) scale and
// computed in bfloat16. The RoPE Falcons (7b/40b/180b) are refused.
#include <cstdlib>

#include "model/family.h"
#include "util/error.h"

namespace hs {

namespace {

ModelConfig parse(const ConfigKeys& k) {
  // HF FalconConfig's defaults decide what an absent key means.
  if (!k.find_bool("alibi").value_or(false))
    k.fail(
        "alibi is not true: this Falcon uses rotary position embeddings (Falcon-7B/40B/180B), "
        "not ALiBi; only the ALiBi Falcons (falcon-rw-1b, -7b) are supported");
  if (k.find_bool("new_decoder_architecture").value_or(false))
    k.fail("new_decoder_architecture is true (Falcon-40B/180B layout): not supported");
  if (k.find_bool("multi_query").value_or(true))
    k.fail(
        "multi_query is true (the default when absent): multi-query attention is not "
        "supported (Falcon-RW sets it false)");
  if (k.find_bool("parallel_attn").value_or(true))
    k.fail(
        "parallel_attn is true (the default when absent): parallel attention and MLP are not "
        "supported (Falcon-RW sets it false)");
  ModelConfig c;
  c.hidden = k.require_size({"hidden_size"}, kMaxHidden);
  c.n_head = k.require_size({"num_attention_heads", "n_head"}, kMaxHidden);
  c.n_layer = k.require_size({"num_hidden_layers", "n_layer"}, kMaxLayers);
  c.vocab = k.require_size({"vocab_size"}, kMaxVocab);
  c.ffn = k.has("ffn_hidden_size") ? k.require_size({"ffn_hidden_size"}, kMaxHidden * 64)
                                   : 4 * c.hidden;
  c.linear_bias = k.find_bool("bias").value_or(false);
  c.norm_bias = true;
  c.emb_norm = false;
  const std::string act = k.find_string("activation").value_or("gelu");
  if (act == "gelu")
    c.act = Gelu::erf;
  else if (act == "gelu_new" || act == "gelu_pytorch_tanh")
    c.act = Gelu::tanh;
  else
    k.fail("activation '" + act + "' is not supported (gelu, gelu_new, gelu_pytorch_tanh)");
  c.alibi.bias_before_scale = true;
  c.alibi.bf16_bias = true;
  // The model as trained (the original Falcon-RW code, and HF's default SDPA path) adds the bias
  // once. HF transformers 5.x's eager attention, the path output_attentions=True takes, adds it
  // a second time (its causal mask already holds bias/sqrt(hd)); that is reproduced on request,
  // to compare with numbers HF reports that way (docs/numerics.md).
  if (const char* env = std::getenv("HEADSURGEON_FALCON_ALIBI"); env && *env) {
    const std::string v = env;
    if (v != "once" && v != "hf-eager")
      throw Error("HEADSURGEON_FALCON_ALIBI", "'" + v + "' is not one of once, hf-eager");
    c.alibi.hf_eager_twice = v == "hf-eager";
  }
  return c;
}

void to_json(const ModelConfig& c, nlohmann::json& j) {
  for (const char* k : {"n_head", "n_layer"}) j.erase(k);
  j["architectures"] = {"FalconForCausalLM"};
  j["hidden_size"] = c.hidden;
  j["num_attention_heads"] = c.n_head;
  j["num_hidden_layers"] = c.n_layer;
  j["vocab_size"] = c.vocab;
  j["ffn_hidden_size"] = c.ffn;
  j["bias"] = c.linear_bias;
  j["alibi"] = true;
  j["multi_query"] = false;
  j["parallel_attn"] = false;
  j["new_decoder_architecture"] = false;
  if (!j.contains("activation")) j["activation"] = c.act == Gelu::erf ? "gelu" : "gelu_new";
}

}  // namespace

const FamilySpec& falcon_family() {
  // Falcon's layer tensors carry BLOOM's names; its model-level ones differ (no embedding norm).
  static const FamilySpec spec = [] {
    FamilySpec s{parse, to_json, bloom_family().names};
    s.names.model[int(ModelRole::emb_norm)] = nullptr;
    s.names.model[int(ModelRole::emb_norm_b)] = nullptr;
    return s;
  }();
  return spec;
}

}  // namespace hs
