#include "model/config.h"

#include <cmath>

#include "model/config_keys.h"
#include "model/family.h"
#include "util/error.h"

namespace hs {

using nlohmann::json;

ConfigKeys::ConfigKeys(const json& j, std::string path, std::string prefix)
    : j_(j), path_(std::move(path)), prefix_(std::move(prefix)) {
  if (!j_.is_object())
    throw Error(path_, prefix_.empty()
                           ? std::string("not a JSON object")
                           : prefix_.substr(0, prefix_.size() - 1) + " is not a JSON object");
}

const json* ConfigKeys::find(const char* key) const {
  const auto it = j_.find(key);
  return it == j_.end() || it->is_null() ? nullptr : &*it;
}

bool ConfigKeys::has(const char* key) const { return find(key) != nullptr; }

const json& ConfigKeys::raw(const char* key) const {
  static const nlohmann::json kNull;
  const nlohmann::json* it = find(key);
  return it ? *it : kNull;
}

void ConfigKeys::fail(const std::string& msg) const { throw Error(path_, msg); }

std::optional<int64_t> ConfigKeys::find_int(std::initializer_list<const char*> names) const {
  std::optional<int64_t> v;
  const char* first = nullptr;
  for (const char* n : names) {
    const json* it = find(n);
    if (!it) continue;
    if (!it->is_number_integer())
      fail("key '" + key(n) + "' must be an integer, not " + it->type_name());
    if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX))
      fail("key '" + key(n) + "' is out of range");
    const int64_t x = it->get<int64_t>();
    if (v && *v != x)
      fail("keys '" + key(first) + "' (" + std::to_string(*v) + ") and '" + key(n) + "' (" +
           std::to_string(x) + ") disagree");
    if (!v) v = x, first = n;
  }
  return v;
}

int64_t ConfigKeys::require_int(std::initializer_list<const char*> names) const {
  if (auto v = find_int(names)) return *v;
  std::string msg = "missing key";
  const char* sep = " '";
  for (const char* n : names) msg += sep + key(n) + "'", sep = " or '";
  fail(msg);
}

int64_t ConfigKeys::require_size(std::initializer_list<const char*> names, int64_t max) const {
  const int64_t v = require_int(names);
  const std::string k = key(*names.begin());
  if (v <= 0) fail(k + " must be positive, got " + std::to_string(v));
  if (v > max)
    fail(k + " " + std::to_string(v) + " is implausibly large (max " + std::to_string(max) + ")");
  return v;
}

std::optional<double> ConfigKeys::find_number(const char* k) const {
  const json* it = find(k);
  if (!it) return std::nullopt;
  if (!it->is_number() || !std::isfinite(it->get<double>()))
    fail("key '" + key(k) + "' must be a number, not " + it->dump());
  return it->get<double>();
}

std::optional<bool> ConfigKeys::find_bool(const char* k) const {
  const json* it = find(k);
  if (!it) return std::nullopt;
  if (!it->is_boolean()) fail(key(k) + " must be true or false, not " + it->dump());
  return it->get<bool>();
}

std::optional<std::string> ConfigKeys::find_string(const char* k) const {
  const json* it = find(k);
  if (!it) return std::nullopt;
  if (!it->is_string()) fail("key '" + key(k) + "' must be a string, not " + it->dump());
  return it->get<std::string>();
}

ConfigKeys ConfigKeys::object(const char* k) const {
  static const json kEmpty = json::object();
  const json* it = find(k);
  return ConfigKeys(it ? *it : kEmpty, path_, prefix_ + k + ".");
}

const char* family_name(Family f) {
  switch (f) {
    case Family::bloom:
      return "bloom";
    case Family::mpt:
      return "mpt";
    case Family::falcon:
      return "falcon";
  }
  return "?";
}

const FamilySpec& family_spec(Family f) {
  switch (f) {
    case Family::mpt:
      return mpt_family();
    case Family::falcon:
      return falcon_family();
    case Family::bloom:
      break;
  }
  return bloom_family();
}

ModelConfig ModelConfig::from_json(const json& j, const std::string& path) {
  const ConfigKeys k(j, path);
  // An absent model_type is read as BLOOM, as older headsurgeon versions did.
  const std::string type = k.find_string("model_type").value_or("bloom");
  for (Family f : {Family::bloom, Family::mpt, Family::falcon})
    if (type == family_name(f)) {
      ModelConfig c = family_spec(f).parse(k);
      c.family = f;
      c.bos_id = k.find_int({"bos_token_id"}).value_or(c.bos_id);
      c.eos_id = k.find_int({"eos_token_id"}).value_or(c.eos_id);
      c.pad_id = k.find_int({"pad_token_id"}).value_or(c.pad_id);
      c.unk_id = k.find_int({"unk_token_id"}).value_or(c.unk_id);
      // BLOOM checkpoints always tie the head (headsurgeon has read them so since its start);
      // MPT and Falcon honour the key as their HF classes do.
      c.tied_head = f == Family::bloom || k.find_bool("tie_word_embeddings").value_or(true);
      if (const auto eps = k.find_number("layer_norm_epsilon")) {
        if (!(*eps > 0)) k.fail("layer_norm_epsilon must be a positive number");
        c.ln_eps = *eps;
      }
      if (c.hidden % c.n_head != 0)
        k.fail("hidden size " + std::to_string(c.hidden) + " is not divisible by the " +
               std::to_string(c.n_head) + " heads");
      return c;
    }
  k.fail("model_type \"" + type +
         "\" is not supported (headsurgeon reads the ALiBi families bloom, mpt and falcon)");
}

json ModelConfig::to_json(const json& base) const {
  json j = base.is_object() ? base : json::object();
  family_spec(family).to_json(*this, j);
  j["model_type"] = family_name(family);
  j["layer_norm_epsilon"] = ln_eps;
  j["bos_token_id"] = bos_id;
  j["eos_token_id"] = eos_id;
  j["pad_token_id"] = pad_id;
  if (family == Family::bloom) j["unk_token_id"] = unk_id;
  if (!j.contains("tie_word_embeddings") || !tied_head) j["tie_word_embeddings"] = tied_head;
  return j;
}

ModelConfig bloom_config(int64_t hidden, int64_t n_head, int64_t n_layer, int64_t vocab,
                         bool post_ln) {
  json j = {{"model_type", "bloom"},
            {"hidden_size", hidden},
            {"n_head", n_head},
            {"n_layer", n_layer},
            {"vocab_size", vocab},
            {"layer_norm_epsilon", 1e-5},
            {"apply_residual_connection_post_layernorm", post_ln}};
  return ModelConfig::from_json(j, "bloom config");
}

}  // namespace hs
