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

// One part of a repo id, as the hub validates it.
bool valid_id_part(const std::string& s) {
  auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  if (s.empty() || s.size() > 96 || !word(s.front()) || !word(s.back())) return false;
  if (s.find("--") != std::string::npos || s.find("..") != std::string::npos) return false;
  for (const char c : s)
    if (!word(c) && c != '-' && c != '.') return false;
  return true;
}

}  // namespace

std::optional<HubId> parse_hub_id(const std::string& spec) {
  HubId id{spec, ""};
  const auto at = spec.find('@');
  if (at != std::string::npos) id.repo = spec.substr(0, at), id.revision = spec.substr(at + 1);
  const auto slash = id.repo.find('/');
  if (slash == std::string::npos || !valid_id_part(id.repo.substr(0, slash)) ||
      !valid_id_part(id.repo.substr(slash + 1)))
    return std::nullopt;
  const std::string& rev = id.revision;
  if (at != std::string::npos &&
      (rev.empty() || rev.find("..") != std::string::npos || rev.front() == '/'))
    throw Error(spec, "invalid revision '" + printable(rev) + "'");
  return id;
}

std::string hub_cache_root() {
  if (const char* c = std::getenv("HF_HUB_CACHE"); c && *c) return c;
  if (const char* h = std::getenv("HF_HOME"); h && *h) return (fs::path(h) / "hub").string();
  const char* home = std::getenv("HOME");
  return (fs::path(home && *home ? home : ".") / ".cache" / "huggingface" / "hub").string();
}

std::string hub_repo_dir(const std::string& root, const std::string& repo) {
  const auto slash = repo.find('/');
  return (fs::path(root) / ("models--" + repo.substr(0, slash) + "--" + repo.substr(slash + 1)))
      .string();
}

std::optional<std::string> cached_snapshot(const HubId& id, const std::string& root) {
  const fs::path repo = hub_repo_dir(root, id.repo);
  const fs::path snaps = repo / "snapshots";
  std::error_code ec;
  if (!fs::is_directory(snaps, ec)) return std::nullopt;
  if (!id.revision.empty()) {
    // A branch or tag resolves through refs/; a commit hash names the snapshot itself.
    const fs::path dir = snaps / read_ref(repo / "refs" / id.revision).value_or(id.revision);
    if (!fs::is_directory(dir, ec)) return std::nullopt;
    return dir.string();
  }
  if (const auto main = read_ref(repo / "refs" / "main");
      main && fs::is_directory(snaps / *main, ec))
    return (snaps / *main).string();
  if (const auto dir = newest_snapshot(snaps)) return dir->string();
  return std::nullopt;
}

bool has_model_files(const std::string& dir_path) {
  const fs::path dir(dir_path);
  std::error_code ec;
  if (!fs::is_regular_file(dir / "config.json", ec)) return false;
  if (fs::is_regular_file(dir / "model.safetensors", ec)) return true;
  const fs::path index = dir / "model.safetensors.index.json";
  if (!fs::is_regular_file(index, ec)) return false;
  // An index that does not parse is WeightFiles' to report, with its file named.
  const json idx = json::parse(read_file(index.string(), false), nullptr, false);
  const auto wm = idx.find("weight_map");
  if (idx.is_discarded() || wm == idx.end() || !wm->is_object()) return true;
  for (const auto& [name, shard] : wm->items())
    if (shard.is_string() && !fs::is_regular_file(dir / shard.get<std::string>(), ec)) return false;
  return true;
}

std::string resolve_model_dir(const std::string& spec) {
  std::error_code ec;
  if (fs::is_directory(spec, ec)) {
    if (!fs::is_regular_file(fs::path(spec) / "config.json", ec))
      throw Error(spec, "no config.json in this directory (not a Hugging Face model directory)");
    return spec;
  }
  const std::string root = hub_cache_root();
  if (const auto id = parse_hub_id(spec)) {
    if (const auto dir = cached_snapshot(*id, root)) {
      if (!fs::is_regular_file(fs::path(*dir) / "config.json", ec))
        throw Error(*dir, "no config.json in this cached snapshot (incomplete download?)");
      return *dir;
    }
    const fs::path snaps = fs::path(hub_repo_dir(root, id->repo)) / "snapshots";
    if (!id->revision.empty() && fs::is_directory(snaps, ec))
      throw Error(spec, "revision '" + printable(id->revision) +
                            "' is not in the Hugging Face cache (looked in " + snaps.string() +
                            ")");
  }
  throw Error(spec, "not a model directory and not found in the Hugging Face cache (looked in " +
                        root + ")");
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
