// A Hugging Face checkpoint of a supported family: config.json read into a ModelConfig, and
// every tensor the family's table says the config needs, found by role, checked for shape and
// type. Tensor names are accepted with or without the base model's "transformer." prefix; the
// name API speaks them WITHOUT it ("h.3.mlp.dense_h_to_4h.weight", "blocks.0.attn.Wqkv.weight").
// A tied head's lm_head.weight, when present, is ignored.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/model_files.h"
#include "model/config.h"
#include "model/roles.h"

namespace hs {

// The config.json of a checkpoint written from c: the family's keys set on base (every other key
// kept) and "dtype" naming `stored`, the model's storage type.
nlohmann::json written_config(const ModelConfig& c, const nlohmann::json& base, DType stored);

class Checkpoint {
 public:
  // Opens config + weight files and checks each tensor the config needs: present, with the shape
  // the config implies, of a float type. Errors name the file, the tensor (its name in the
  // file), its role and the expected shape.
  explicit Checkpoint(const std::string& spec);

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const nlohmann::json& config_json() const { return config_json_; }
  // The dtype of the token embedding (the model's storage type, for the GPU's weight type).
  DType weight_dtype() const { return tensor(ModelRole::tok_emb).dtype; }
  // Path of tokenizer.json in the directory (may not exist; Tokenizer reports that).
  std::string tokenizer_path() const { return dir_ + "/tokenizer.json"; }

  // The tensor of a role the config has (throws for an absent one: check role_present).
  const TensorView& tensor(ModelRole r) const;
  const TensorView& tensor(LayerRole r, int64_t layer) const;
  const TensorView& tensor(const TensorRef& t) const;

  // Rows [first, first + n) of a tensor, in the internal qkv layout (ops/qkv_layout.h: the fused
  // qkv rows of a family stored otherwise are permuted here), converted to `dst` (a float type)
  // into out. A vector has one element per row.
  void read_rows(ModelRole r, DType dst, int64_t first, int64_t n, void* out) const;
  void read_rows(LayerRole r, int64_t layer, DType dst, int64_t first, int64_t n, void* out) const;
  void read_rows(const TensorRef& t, DType dst, int64_t first, int64_t n, void* out) const;

  bool has(const std::string& name) const;
  const TensorView& tensor(const std::string& name) const;  // throws when missing
  void release(const TensorView& t) const { files_->release(t); }
  std::vector<std::string> tensor_names() const;  // every tensor of the model, sorted

 private:
  const TensorView& need(const std::string& name, const std::string& role,
                         const std::vector<int64_t>& shape);
  void read_rows(const TensorView& t, bool qkv, DType dst, int64_t first, int64_t n,
                 void* out) const;

  std::string dir_;
  nlohmann::json config_json_;
  ModelConfig config_;
  std::unique_ptr<WeightFiles> files_;
  std::map<std::string, const TensorView*> index_;  // names without the prefix
  std::vector<const TensorView*> model_;            // [kModelRoles], null when absent
  std::vector<const TensorView*> layers_;           // [n_layer * kLayerRoles]
};

}  // namespace hs
