// The tensors of a small random BLOOM for tests: every one drawn at random (LayerNorms
// included, around their usual 1 / 0), so each parameter and both residual variants matter.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace hs::test {

// (canonical name, shape, standard deviation, mean), in checkpoint order.
using TensorSpec = std::tuple<std::string, std::vector<int64_t>, float, float>;

inline std::vector<TensorSpec> random_bloom_specs(int64_t d, int64_t L, int64_t V) {
  std::vector<TensorSpec> specs = {{"word_embeddings.weight", {V, d}, 0.5f, 0},
                                   {"word_embeddings_layernorm.weight", {d}, 0.2f, 1},
                                   {"word_embeddings_layernorm.bias", {d}, 0.2f, 0},
                                   {"ln_f.weight", {d}, 0.2f, 1},
                                   {"ln_f.bias", {d}, 0.2f, 0}};
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    for (const char* n : {"input_layernorm", "post_attention_layernorm"}) {
      specs.push_back({p + n + ".weight", {d}, 0.2f, 1});
      specs.push_back({p + n + ".bias", {d}, 0.2f, 0});
    }
    specs.push_back({p + "self_attention.query_key_value.weight", {3 * d, d}, 0.3f, 0});
    specs.push_back({p + "self_attention.query_key_value.bias", {3 * d}, 0.1f, 0});
    specs.push_back({p + "self_attention.dense.weight", {d, d}, 0.1f, 0});
    specs.push_back({p + "self_attention.dense.bias", {d}, 0.1f, 0});
    specs.push_back({p + "mlp.dense_h_to_4h.weight", {4 * d, d}, 0.1f, 0});
    specs.push_back({p + "mlp.dense_h_to_4h.bias", {4 * d}, 0.1f, 0});
    specs.push_back({p + "mlp.dense_4h_to_h.weight", {d, 4 * d}, 0.05f, 0});
    specs.push_back({p + "mlp.dense_4h_to_h.bias", {d}, 0.1f, 0});
  }
  return specs;
}

}  // namespace hs::test
