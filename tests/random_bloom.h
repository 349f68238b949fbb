// The tensors of a small random BLOOM for tests: every one drawn at random (LayerNorms
// included, around their usual 1 / 0), so each parameter and both residual variants matter.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"

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

// A random F32 BLOOM checkpoint (fixed seed) in a fresh temporary directory named after `prefix`,
// the process and the shape; returns the directory (the caller removes it).
inline std::string write_random_bloom(const std::string& prefix, int64_t d, int64_t H, int64_t L,
                                      int64_t V, bool post_ln) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / (prefix + "_" + std::to_string(::getpid()) + "_" +
                                   std::to_string(H) + "_" + std::to_string(post_ln));
  fs::create_directories(dir);
  std::mt19937 rng(4321);
  std::normal_distribution<float> nd(0, 1);
  const auto specs = random_bloom_specs(d, L, V);
  std::vector<std::vector<float>> bufs;
  std::vector<TensorToWrite> tw;
  bufs.reserve(specs.size());
  for (auto& [name, shape, scale, offset] : specs) {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    bufs.emplace_back(n);
    for (auto& x : bufs.back()) x = offset + scale * nd(rng);
    tw.push_back({name, DType::F32, shape, bufs.back().data(), size_t(n) * 4});
  }
  write_safetensors((dir / "model.safetensors").string(), tw);
  std::ofstream(dir / "config.json") << bloom_config(d, H, L, V, post_ln).to_json().dump(2);
  return dir.string();
}

}  // namespace hs::test
