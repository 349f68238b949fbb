// A Hugging Face BLOOM checkpoint on disk: config.json + model.safetensors or shards listed in
// model.safetensors.index.json. Tensor names are accepted with or without the "transformer."
// prefix; this class speaks canonical names WITHOUT it ("h.3.mlp.dense_h_to_4h.weight",
// "word_embeddings.weight", "ln_f.bias"). lm_head.weight, when present, is tied and ignored.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"

namespace hs {

// SPEC is a directory, or a hub id "org/name" (optionally "org/name@revision") found in the
// local Hugging Face cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub,
// at models--org--name/snapshots/REV with REV from refs/main (or the newest snapshot).
// Throws hs::Error naming what was looked for when nothing is found.
std::string resolve_model_dir(const std::string& spec);

class Checkpoint {
 public:
  // Opens config + every safetensors file and checks that each tensor BLOOM needs is present
  // with the shape the config implies. Errors name the file and tensor.
  explicit Checkpoint(const std::string& spec);

  const std::string& dir() const { return dir_; }
  const BloomConfig& config() const { return config_; }
  const nlohmann::json& config_json() const { return config_json_; }
  // The dtype most of the weights are stored in (what we write back).
  DType weight_dtype() const { return weight_dtype_; }
  // Path of tokenizer.json in the directory (may not exist; Tokenizer reports that).
  std::string tokenizer_path() const { return dir_ + "/tokenizer.json"; }

  bool has(const std::string& canonical) const;
  const TensorView& tensor(const std::string& canonical) const;  // throws when missing
  void release(const TensorView& t) const;                       // drop its mapped pages from RSS
  std::vector<std::string> tensor_names() const;                 // canonical names, sorted

 private:
  std::string dir_;
  nlohmann::json config_json_;
  BloomConfig config_;
  DType weight_dtype_ = DType::F32;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<const SafetensorsFile*, const TensorView*>> index_;
};

}  // namespace hs
