// A Hugging Face model directory on disk: where it is (a path, or a hub id in the local cache)
// and its safetensors weight files. What the tensors mean is the model layer's business
// (model/checkpoint.h); this layer only finds, maps and validates files.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace hs {

// SPEC is a directory, or a hub id "org/name" (optionally "org/name@revision") found in the
// local Hugging Face cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub,
// at models--org--name/snapshots/REV with REV from refs/main (or the newest snapshot).
// Throws hs::Error naming what was looked for when nothing is found.
std::string resolve_model_dir(const std::string& spec);

// The weight files of a Hugging Face model directory: model.safetensors, or the shards that
// model.safetensors.index.json lists (each checked to hold what the index says), memory-mapped.
// Names are the files' own; the same name in two files is an error naming both.
class WeightFiles {
 public:
  explicit WeightFiles(const std::string& dir);

  const TensorView* find(const std::string& name) const;
  // Every tensor by name, sorted.
  const std::map<std::string, const TensorView*>& tensors() const { return index_; }
  // The file named when a tensor is missing: model.safetensors or the index.
  const std::string& where() const { return where_; }
  void release(const TensorView& t) const;  // drop its mapped pages from RSS

 private:
  std::string where_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

}  // namespace hs
