// BLOOM hyper-parameters from a Hugging Face config.json (with its key aliases).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace hs {

struct BloomConfig {
  int64_t hidden = 0;   // hidden_size | n_embed
  int64_t n_head = 0;   // n_head | num_attention_heads
  int64_t n_layer = 0;  // n_layer | num_hidden_layers
  int64_t vocab = 0;    // vocab_size (rows of word_embeddings)
  double ln_eps = 1e-5;
  bool post_ln = false;  // apply_residual_connection_post_layernorm
  int64_t bos_id = 1, eos_id = 2, pad_id = 3, unk_id = 0;

  int64_t head_dim() const { return hidden / n_head; }
  int64_t ffn() const { return 4 * hidden; }

  // Validates (positive sizes, heads dividing hidden, types). Errors name `path`.
  static BloomConfig from_json(const nlohmann::json& j, const std::string& path);
  // The config.json we write: HF's BloomConfig keys, keeping every unknown key of `base`.
  nlohmann::json to_json(const nlohmann::json& base = nlohmann::json::object()) const;
};

// The tensors of one BLOOM block, k = 0..kLayerTensors-1 in the order of LayerWeights' fields:
// input LayerNorm w/b, query_key_value w/b, dense w/b, post-attention LayerNorm w/b,
// dense_h_to_4h w/b, dense_4h_to_h w/b. One list for every reader and writer of checkpoints.
constexpr int kLayerTensors = 12;
// Canonical name (no "transformer." prefix), e.g. "h.3.mlp.dense_h_to_4h.weight".
std::string layer_tensor_name(int64_t layer, int k);
// Its shape under config c: [rows, cols] for the four matrices, [n] for the rest.
std::vector<int64_t> layer_tensor_shape(const BloomConfig& c, int k);

}  // namespace hs
