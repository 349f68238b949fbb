#include "model/config.h"

#include <cmath>
#include <optional>

#include "util/error.h"

namespace hs {

namespace {

using nlohmann::json;

// Sanity bounds, far above any BLOOM (176B: hidden 14336, 70 layers), that keep shape arithmetic
// (4 * hidden, vocab * hidden, per-layer loops) clear of overflow and absurd allocations.
constexpr int64_t kMaxHidden = int64_t(1) << 20;
constexpr int64_t kMaxLayers = int64_t(1) << 16;
constexpr int64_t kMaxVocab = (int64_t(1) << 31) - 1;  // token ids are int32

// The integer under the first present key of `names` (null counts as absent). HF accepts every
// alias, so when several are present they must agree.
std::optional<int64_t> find_int(const json& j, std::initializer_list<const char*> names,
                                const std::string& path) {
  std::optional<int64_t> v;
  const char* first = nullptr;
  for (const char* n : names) {
    const auto it = j.find(n);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_number_integer())
      throw Error(path, std::string("key '") + n + "' must be an integer, not " + it->type_name());
    if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX))
      throw Error(path, std::string("key '") + n + "' is out of range");
    const int64_t x = it->get<int64_t>();
    if (v && *v != x)
      throw Error(path, std::string("keys '") + first + "' (" + std::to_string(*v) + ") and '" + n +
                            "' (" + std::to_string(x) + ") disagree");
    if (!v) v = x, first = n;
  }
  return v;
}

int64_t require_int(const json& j, std::initializer_list<const char*> names,
                    const std::string& path) {
  if (auto v = find_int(j, names, path)) return *v;
  std::string msg = "missing key";
  const char* sep = " '";
  for (const char* n : names) msg += sep + std::string(n) + "'", sep = " or '";
  throw Error(path, msg);
}

void check_range(const std::string& path, const char* key, int64_t v, int64_t max) {
  if (v <= 0) throw Error(path, std::string(key) + " must be positive, got " + std::to_string(v));
  if (v > max)
    throw Error(path, std::string(key) + " " + std::to_string(v) + " is implausibly large (max " +
                          std::to_string(max) + ")");
}

}  // namespace

BloomConfig BloomConfig::from_json(const json& j, const std::string& path) {
  if (!j.is_object()) throw Error(path, "not a JSON object");
  if (const auto mt = j.find("model_type"); mt != j.end() && *mt != "bloom")
    throw Error(path, "model_type is " + (mt->is_string() ? mt->dump() : mt->type_name()) +
                          ", expected \"bloom\" (only BLOOM models are supported)");
  BloomConfig c;
  c.hidden = require_int(j, {"hidden_size", "n_embed"}, path);
  c.n_head = require_int(j, {"n_head", "num_attention_heads"}, path);
  c.n_layer = require_int(j, {"n_layer", "num_hidden_layers"}, path);
  c.vocab = require_int(j, {"vocab_size"}, path);
  c.bos_id = find_int(j, {"bos_token_id"}, path).value_or(1);
  c.eos_id = find_int(j, {"eos_token_id"}, path).value_or(2);
  c.pad_id = find_int(j, {"pad_token_id"}, path).value_or(3);
  c.unk_id = find_int(j, {"unk_token_id"}, path).value_or(0);
  if (const auto it = j.find("layer_norm_epsilon"); it != j.end()) {
    if (!it->is_number() || !(it->get<double>() > 0) || !std::isfinite(it->get<double>()))
      throw Error(path, "layer_norm_epsilon must be a positive number");
    c.ln_eps = it->get<double>();
  }
  if (const auto it = j.find("apply_residual_connection_post_layernorm"); it != j.end()) {
    if (!it->is_boolean())
      throw Error(path, "apply_residual_connection_post_layernorm must be true or false");
    c.post_ln = it->get<bool>();
  }
  check_range(path, "hidden_size", c.hidden, kMaxHidden);
  check_range(path, "n_head", c.n_head, kMaxHidden);
  check_range(path, "n_layer", c.n_layer, kMaxLayers);
  check_range(path, "vocab_size", c.vocab, kMaxVocab);
  if (c.hidden % c.n_head != 0)
    throw Error(path, "hidden_size " + std::to_string(c.hidden) + " is not divisible by n_head " +
                          std::to_string(c.n_head));
  return c;
}

json BloomConfig::to_json(const json& base) const {
  json j = base.is_object() ? base : json::object();
  // HF lets an alias override the canonical key, so a stale alias must not survive.
  for (const char* k : {"n_embed", "num_attention_heads", "num_hidden_layers"}) j.erase(k);
  j["model_type"] = "bloom";
  j["architectures"] = {"BloomForCausalLM"};
  j["hidden_size"] = hidden;
  j["n_head"] = n_head;
  j["n_layer"] = n_layer;
  j["vocab_size"] = vocab;
  j["layer_norm_epsilon"] = ln_eps;
  j["apply_residual_connection_post_layernorm"] = post_ln;
  j["bos_token_id"] = bos_id;
  j["eos_token_id"] = eos_id;
  j["pad_token_id"] = pad_id;
  j["unk_token_id"] = unk_id;
  if (!j.contains("tie_word_embeddings")) j["tie_word_embeddings"] = true;
  return j;
}

namespace {
// Suffix, and the shape in units of hidden (cols 0: a vector of rows * hidden).
struct LayerTensorSpec {
  const char* suffix;
  int64_t rows, cols;
};
constexpr LayerTensorSpec kLayerSpecs[kLayerTensors] = {
    {"input_layernorm.weight", 1, 0},
    {"input_layernorm.bias", 1, 0},
    {"self_attention.query_key_value.weight", 3, 1},
    {"self_attention.query_key_value.bias", 3, 0},
    {"self_attention.dense.weight", 1, 1},
    {"self_attention.dense.bias", 1, 0},
    {"post_attention_layernorm.weight", 1, 0},
    {"post_attention_layernorm.bias", 1, 0},
    {"mlp.dense_h_to_4h.weight", 4, 1},
    {"mlp.dense_h_to_4h.bias", 4, 0},
    {"mlp.dense_4h_to_h.weight", 1, 4},
    {"mlp.dense_4h_to_h.bias", 1, 0}};
}  // namespace

std::string layer_tensor_name(int64_t layer, int k) {
  return "h." + std::to_string(layer) + "." + kLayerSpecs[k].suffix;
}

std::vector<int64_t> layer_tensor_shape(const BloomConfig& c, int k) {
  const LayerTensorSpec& s = kLayerSpecs[k];
  if (s.cols == 0) return {s.rows * c.hidden};
  return {s.rows * c.hidden, s.cols * c.hidden};
}

}  // namespace hs
