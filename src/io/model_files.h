// A Hugging Face model directory on disk: where it is (a path, or a hub id in the local cache)
// and its safetensors weight files. What the tensors mean is the model layer's business
// (model/checkpoint.h); this layer only finds, maps and validates files.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace hs {

// A hub id: "org/name", optionally "@revision" (a branch, tag or commit).
struct HubId {
  std::string repo;      // org/name
  std::string revision;  // empty: the default branch
};
// SPEC as a hub id, or nullopt when it is not one (org and name: 1-96 letters, digits, '-', '_',
// '.', starting and ending with a letter, digit or '_', no "--" or "..", as the hub requires).
// An empty or unsafe revision (leading '/', "..") is an error naming SPEC.
std::optional<HubId> parse_hub_id(const std::string& spec);

// The local Hugging Face cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
std::string hub_cache_root();
// ROOT/models--org--name, where the cache keeps REPO.
std::string hub_repo_dir(const std::string& root, const std::string& repo);
// The snapshot directory of ID in the cache at ROOT: refs/REVISION's commit, or REVISION itself
// as a commit; without a revision refs/main's, else the newest snapshot. nullopt when absent.
std::optional<std::string> cached_snapshot(const HubId& id, const std::string& root);
// DIR holds config.json and the weight files WeightFiles reads (model.safetensors, or the index
// and every shard it names): a cached snapshot that needs nothing more downloaded to load.
bool has_model_files(const std::string& dir);

// SPEC is a directory, or a hub id found in the local Hugging Face cache (cached_snapshot).
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
