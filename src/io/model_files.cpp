#include "io/model_files.h"

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include "util/error.h"
#include "util/files.h"

namespace hs {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path hub_cache_root() {
  if (const char* c = std::getenv("HF_HUB_CACHE"); c && *c) return c;
  if (const char* h = std::getenv("HF_HOME"); h && *h) return fs::path(h) / "hub";
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : ".") / ".cache" / "huggingface" / "hub";
}

// The commit a refs/ file points to; nullopt when absent or not a plain name.
std::optional<std::string> read_ref(const fs::path& p) {
  std::ifstream f(p);
  std::string s;
  if (!f || !std::getline(f, s)) return std::nullopt;
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  if (s.empty() || s.find('/') != std::string::npos || s == "." || s == "..") return std::nullopt;
  return s;
}

// The snapshot directory with the newest modification time (ties: the greatest name, so the
// choice does not depend on directory order).
std::optional<fs::path> newest_snapshot(const fs::path& snaps) {
  std::optional<fs::path> best;
  fs::file_time_type best_time{};
  std::error_code ec;
  for (auto it = fs::directory_iterator(snaps, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    std::error_code e2;
    if (!it->is_directory(e2)) continue;
    const auto t = it->last_write_time(e2);
    if (e2) continue;
    if (!best || t > best_time || (t == best_time && it->path().filename() > best->filename()))
      best = it->path(), best_time = t;
  }
  return best;
}

// org/name[@rev] under `root`, or nullopt when SPEC is not such an id or the repo is not cached.
std::optional<std::string> find_in_hub_cache(const std::string& spec, const fs::path& root) {
  std::string id = spec, rev;
  const auto at = id.find('@');
  if (at != std::string::npos) rev = id.substr(at + 1), id.resize(at);
  const auto slash = id.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == id.size() ||
      id.find('/', slash + 1) != std::string::npos)
    return std::nullopt;
  const fs::path repo = root / ("models--" + id.substr(0, slash) + "--" + id.substr(slash + 1));
  const fs::path snaps = repo / "snapshots";
  std::error_code ec;
  if (!fs::is_directory(snaps, ec)) return std::nullopt;

  std::optional<fs::path> dir;
  if (at != std::string::npos) {
    if (rev.empty() || rev.find("..") != std::string::npos || rev.front() == '/')
      throw Error(spec, "invalid revision '" + printable(rev) + "'");
    // A branch or tag resolves through refs/; a commit hash names the snapshot itself.
    const std::string commit = read_ref(repo / "refs" / rev).value_or(rev);
    if (!fs::is_directory(snaps / commit, ec))
      throw Error(spec, "revision '" + printable(rev) +
                            "' is not in the Hugging Face cache (looked in " + snaps.string() +
                            ")");
    dir = snaps / commit;
  } else if (const auto main = read_ref(repo / "refs" / "main");
             main && fs::is_directory(snaps / *main, ec)) {
    dir = snaps / *main;
  } else {
    dir = newest_snapshot(snaps);
    if (!dir) return std::nullopt;
  }
  if (!fs::is_regular_file(*dir / "config.json", ec))
    throw Error(dir->string(), "no config.json in this cached snapshot (incomplete download?)");
  return dir->string();
}

}  // namespace

std::string resolve_model_dir(const std::string& spec) {
  std::error_code ec;
  if (fs::is_directory(spec, ec)) {
    if (!fs::is_regular_file(fs::path(spec) / "config.json", ec))
      throw Error(spec, "no config.json in this directory (not a Hugging Face model directory)");
    return spec;
  }
  const fs::path root = hub_cache_root();
  if (auto dir = find_in_hub_cache(spec, root)) return *dir;
  throw Error(spec, "not a model directory and not found in the Hugging Face cache (looked in " +
                        root.string() + ")");
}

WeightFiles::WeightFiles(const std::string& dir_path) {
  const fs::path dir(dir_path);
  std::error_code ec;
  const fs::path single = dir / "model.safetensors", index = dir / "model.safetensors.index.json";
  if (fs::exists(single, ec)) {
    where_ = single.string();
    files_.push_back(std::make_unique<SafetensorsFile>(where_));
  } else if (fs::exists(index, ec)) {
    where_ = index.string();
    const json idx = read_json_file(index.string());
    const auto wm = idx.find("weight_map");  // end() for a non-object too
    if (wm == idx.end() || !wm->is_object()) throw Error(where_, "missing weight_map object");
    std::map<std::string, const SafetensorsFile*> shards;
    for (const auto& [name, f] : wm->items()) {
      const std::string tensor = "tensor '" + printable(name) + "'";
      if (!f.is_string()) throw Error(where_, "weight_map entry of " + tensor + " is not a string");
      const std::string shard = f.get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
        throw Error(where_, "weight_map entry of " + tensor + ": '" + printable(shard) +
                                "' is not a file name in the model directory");
      auto [it, fresh] = shards.try_emplace(shard, nullptr);
      if (fresh) {
        const fs::path sp = dir / shard;
        if (!fs::is_regular_file(sp, ec))
          throw Error(where_,
                      "shard '" + printable(shard) + "' (of " + tensor + ") does not exist");
        files_.push_back(std::make_unique<SafetensorsFile>(sp.string()));
        it->second = files_.back().get();
      }
      if (!it->second->find(name))
        throw Error(it->second->path(), tensor + " is listed in " + index.filename().string() +
                                            " but is not in this shard");
    }
    if (files_.empty()) throw Error(where_, "weight_map is empty");
  } else {
    throw Error(dir_path, "no model.safetensors or model.safetensors.index.json in this directory");
  }
  for (const auto& f : files_)
    for (const auto& [name, view] : f->tensors())
      if (!index_.emplace(name, &view).second)
        throw Error(f->path(), "tensor '" + printable(name) + "' appears in two weight files");
}

const TensorView* WeightFiles::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

void WeightFiles::release(const TensorView& t) const {
  for (const auto& f : files_)
    if (f->path() == t.file) f->release(t);
}

}  // namespace hs
