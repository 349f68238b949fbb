// Random checkpoints of the three ALiBi families for tests, written exactly as Hugging Face lays
// them out (config.json with the family's own keys, model.safetensors with the HF tensor names),
// so that code under test reads them as it would a real model. Every tensor is drawn at random
// (LayerNorm weights around 1, biases around 0) so that each parameter matters; the scales keep
// activations and logits of order one whatever the width.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace hs::test {

struct FamilySpec {
  std::string family;  // "bloom", "mpt", "falcon"
  int64_t d = 0, H = 0, L = 0, V = 0;
  bool biases = true;          // mpt: !no_bias; falcon: bias (BLOOM always has biases)
  bool post_ln = false;        // bloom: apply_residual_connection_post_layernorm
  bool tied = true;            // tie_word_embeddings; false adds a top-level lm_head.weight
  double expansion_ratio = 4;  // mpt: MLP width = int(ratio * d)
  int64_t ffn = 0;             // falcon: ffn_hidden_size, 0 = 4d
  std::optional<double> clip_qkv = std::nullopt, softmax_scale = std::nullopt;  // mpt attn_config
  std::optional<double> alibi_bias_max = std::nullopt;  // mpt attn_config (8 when unset)
  nlohmann::json logit_scale = nullptr;                 // mpt: null, a number or "inv_sqrt_d_model"
  DType dtype = DType::F32;                             // storage type of every tensor
};

namespace random_family_detail {

struct Spec {
  std::string name;
  std::vector<int64_t> shape;
  float mean, std;
};

inline void layer_norm(std::vector<Spec>& out, const std::string& name, int64_t d, bool bias) {
  out.push_back({name + ".weight", {d}, 1.0f, 0.2f});
  if (bias) out.push_back({name + ".bias", {d}, 0.0f, 0.1f});
}

// Weight std 1/sqrt(in): each output of order one for inputs of order one.
inline void linear(std::vector<Spec>& out, const std::string& name, int64_t o, int64_t i,
                   bool bias) {
  out.push_back({name + ".weight", {o, i}, 0.0f, float(1.0 / std::sqrt(double(i)))});
  if (bias) out.push_back({name + ".bias", {o}, 0.0f, 0.1f});
}

// A number as the MosaicML configs write it: integral values as integers (4, not 4.0).
inline nlohmann::json number(double x) {
  if (x == std::floor(x) && std::abs(x) < 1e15) return int64_t(x);
  return x;
}

inline void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("write_random_family_model: " + what);
}

}  // namespace random_family_detail

// Writes DIR/config.json and a DIR/model.safetensors of the model `s` with tensors drawn
// from std::mt19937 seeded with `seed` (same seed and spec, same bytes). Returns dir.
inline std::string write_random_family_model(const std::string& dir, const FamilySpec& s,
                                             uint64_t seed) {
  using namespace random_family_detail;
  using nlohmann::json;
  require(s.d > 0 && s.H > 0 && s.L > 0 && s.V > 0 && s.d % s.H == 0,
          "d, H, L, V must be positive and d a multiple of H");
  const bool mpt = s.family == "mpt", bloom = s.family == "bloom", falcon = s.family == "falcon";
  require(mpt || bloom || falcon, "unknown family '" + s.family + "'");
  require(mpt || (!s.clip_qkv && !s.softmax_scale && !s.alibi_bias_max && s.logit_scale.is_null()),
          "clip_qkv, softmax_scale, alibi_bias_max and logit_scale are MPT options");
  require(bloom || !s.post_ln, "post_ln is a BLOOM option");
  require(!bloom || s.biases, "BLOOM always has biases");
  require(falcon || s.ffn == 0, "ffn is a Falcon option (MPT: expansion_ratio)");

  const int64_t d = s.d, L = s.L, V = s.V;
  const json tokens = {{"bos_token_id", 1}, {"eos_token_id", 2}, {"pad_token_id", 3}};
  json config;
  std::vector<Spec> specs;
  if (bloom) {  // BloomConfig / BloomForCausalLM
    config = {{"model_type", "bloom"},
              {"architectures", {"BloomForCausalLM"}},
              {"hidden_size", d},
              {"n_head", s.H},
              {"n_layer", L},
              {"vocab_size", V},
              {"layer_norm_epsilon", 1e-5},
              {"apply_residual_connection_post_layernorm", s.post_ln},
              {"tie_word_embeddings", s.tied}};
    specs.push_back({"transformer.word_embeddings.weight", {V, d}, 0.0f, 0.5f});
    layer_norm(specs, "transformer.word_embeddings_layernorm", d, true);
    for (int64_t i = 0; i < L; ++i) {
      const std::string p = "transformer.h." + std::to_string(i) + ".";
      layer_norm(specs, p + "input_layernorm", d, true);
      linear(specs, p + "self_attention.query_key_value", 3 * d, d, true);
      linear(specs, p + "self_attention.dense", d, d, true);
      layer_norm(specs, p + "post_attention_layernorm", d, true);
      linear(specs, p + "mlp.dense_h_to_4h", 4 * d, d, true);
      linear(specs, p + "mlp.dense_4h_to_h", d, 4 * d, true);
    }
    layer_norm(specs, "transformer.ln_f", d, true);
  } else if (mpt) {  // MptConfig (MosaicML keys) / MptForCausalLM
    const int64_t ffn = int64_t(double(d) * s.expansion_ratio);
    json attn = {{"alibi", true},        {"alibi_bias_max", number(s.alibi_bias_max.value_or(8))},
                 {"attn_impl", "torch"}, {"attn_type", "multihead_attention"},
                 {"attn_pdrop", 0},      {"attn_uses_sequence_id", false},
                 {"prefix_lm", false},   {"qk_ln", false},
                 {"clip_qkv", nullptr},  {"softmax_scale", nullptr}};
    if (s.clip_qkv) attn["clip_qkv"] = *s.clip_qkv;
    if (s.softmax_scale) attn["softmax_scale"] = *s.softmax_scale;
    config = {{"model_type", "mpt"},
              {"architectures", {"MptForCausalLM"}},
              {"d_model", d},
              {"n_heads", s.H},
              {"n_layers", L},
              {"vocab_size", V},
              {"max_seq_len", 2048},
              {"learned_pos_emb", false},
              {"no_bias", !s.biases},
              {"norm_type", "low_precision_layernorm"},
              {"layer_norm_epsilon", 1e-5},
              {"logit_scale", s.logit_scale},
              {"tie_word_embeddings", s.tied},
              {"expansion_ratio", number(s.expansion_ratio)},
              {"attn_config", attn}};
    specs.push_back({"transformer.wte.weight", {V, d}, 0.0f, 0.5f});
    for (int64_t i = 0; i < L; ++i) {
      const std::string p = "transformer.blocks." + std::to_string(i) + ".";
      layer_norm(specs, p + "norm_1", d, s.biases);
      linear(specs, p + "attn.Wqkv", 3 * d, d, s.biases);
      linear(specs, p + "attn.out_proj", d, d, s.biases);
      layer_norm(specs, p + "norm_2", d, s.biases);
      linear(specs, p + "ffn.up_proj", ffn, d, s.biases);
      linear(specs, p + "ffn.down_proj", d, ffn, s.biases);
    }
    layer_norm(specs, "transformer.norm_f", d, s.biases);
  } else {  // FalconConfig / FalconForCausalLM, the Falcon-RW variant
    const int64_t ffn = s.ffn ? s.ffn : 4 * d;
    config = {{"model_type", "falcon"}, {"architectures", {"FalconForCausalLM"}},
              {"hidden_size", d},       {"num_attention_heads", s.H},
              {"num_kv_heads", s.H},    {"num_hidden_layers", L},
              {"vocab_size", V},        {"layer_norm_epsilon", 1e-5},
              {"bias", s.biases},       {"activation", "gelu"},
              {"ffn_hidden_size", ffn}, {"alibi", true},
              {"parallel_attn", false}, {"new_decoder_architecture", false},
              {"multi_query", false},   {"tie_word_embeddings", s.tied}};
    specs.push_back({"transformer.word_embeddings.weight", {V, d}, 0.0f, 0.5f});
    for (int64_t i = 0; i < L; ++i) {
      const std::string p = "transformer.h." + std::to_string(i) + ".";
      layer_norm(specs, p + "input_layernorm", d, true);
      linear(specs, p + "self_attention.query_key_value", 3 * d, d, s.biases);
      linear(specs, p + "self_attention.dense", d, d, s.biases);
      layer_norm(specs, p + "post_attention_layernorm", d, true);
      linear(specs, p + "mlp.dense_h_to_4h", ffn, d, s.biases);
      linear(specs, p + "mlp.dense_4h_to_h", d, ffn, s.biases);
    }
    layer_norm(specs, "transformer.ln_f", d, true);
  }
  if (!s.tied) specs.push_back({"lm_head.weight", {V, d}, 0.0f, 0.5f});
  config["dtype"] = s.dtype == DType::BF16  ? "bfloat16"
                    : s.dtype == DType::F16 ? "float16"
                                            : "float32";
  config.update(tokens);

  std::seed_seq seq{uint32_t(seed), uint32_t(seed >> 32)};
  std::mt19937 rng(seq);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<std::byte>> data;
  data.reserve(specs.size());
  std::vector<TensorToWrite> tensors;
  for (const Spec& sp : specs) {
    int64_t n = 1;
    for (int64_t x : sp.shape) n *= x;
    std::vector<float> v(n);
    for (float& x : v) x = sp.mean + sp.std * normal(rng);
    data.emplace_back(size_t(n) * dtype_size(s.dtype));
    convert_from_f32(v.data(), size_t(n), s.dtype, data.back().data());
    tensors.push_back({sp.name, s.dtype, sp.shape, data.back().data(), data.back().size()});
  }
  std::filesystem::create_directories(dir);
  write_safetensors(dir + "/model.safetensors", tensors);
  std::ofstream out(dir + "/config.json");
  out << config.dump(2) << "\n";
  if (!out) throw std::runtime_error(dir + "/config.json: cannot write");
  return dir;
}

}  // namespace hs::test
