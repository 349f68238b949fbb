#include "surgery/plan.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include "util/error.h"

namespace hs {

namespace {

namespace fs = std::filesystem;

std::vector<HeadRef> flatten(const std::map<int, std::vector<int>>& m) {
  std::vector<HeadRef> out;
  for (const auto& [l, hs] : m)
    for (int h : hs) out.push_back({l, h});
  return out;
}

nlohmann::json layer_map_json(const std::map<int, std::vector<int>>& m) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [l, hs] : m) j[std::to_string(l)] = hs;
  return j;
}

std::string band_name(const std::pair<int, int>& b) {
  std::ostringstream s;  // not "H" + to_string(...): GCC 12 warns falsely (-Wrestrict) on that
  s << "H" << b.first << "-H" << b.second;
  return s.str();
}

// The folder above `p`, lexically: a diagnosis names the checkpoint as diagnose was given it.
fs::path up(const fs::path& p) {
  const fs::path q = (p / "..").lexically_normal();
  return q.has_filename() ? q : q.parent_path();
}

std::map<int, std::vector<int>> read_layer_map(const nlohmann::json& j, const std::string& key,
                                               const std::string& path, int layers, int heads) {
  std::map<int, std::vector<int>> out;
  if (!j.contains(key)) return out;
  if (!j[key].is_object())
    throw Error(path, "'" + key + "' must be an object {\"LAYER\": [heads]}");
  for (auto& [ls, hv] : j[key].items()) {
    size_t used = 0;
    int l = -1;
    try {
      l = std::stoi(ls, &used);
    } catch (const std::exception&) {
    }
    if (used != ls.size() || l < 0 || l >= layers)
      throw Error(path, key + ": layer '" + ls + "' does not exist (the model has " +
                            std::to_string(layers) + " layers, 0.." + std::to_string(layers - 1) +
                            ")");
    if (!hv.is_array()) throw Error(path, key + "[" + ls + "] must be an array of head indices");
    std::set<int> seen;
    for (auto& h : hv) {
      if (!h.is_number_integer() || h.get<int64_t>() < 0 || h.get<int64_t>() >= heads)
        throw Error(path, key + "[" + ls + "]: head " + h.dump() +
                              " does not exist (the model has " + std::to_string(heads) +
                              " heads per layer)");
      if (!seen.insert(h.get<int>()).second)
        throw Error(path, key + "[" + ls + "]: head " + h.dump() + " listed twice");
    }
    if (!seen.empty()) out[l] = std::vector<int>(seen.begin(), seen.end());
  }
  return out;
}

}  // namespace

std::vector<HeadRef> Plan::target_list() const { return flatten(targets); }
std::vector<HeadRef> Plan::watch_list() const { return flatten(frozen_watch); }

nlohmann::json Plan::to_json() const {
  int n = 0;
  for (const auto& [l, hs] : targets) n += int(hs.size());
  nlohmann::json j = {{"targets", layer_map_json(targets)},
                      {"frozen_watch", layer_map_json(frozen_watch)},
                      {"target_count", n},
                      {"bos", bos},
                      {"reason", reason}};
  if (band) j["band"] = {band->first, band->second};
  return j;
}

Plan Plan::from_json(const nlohmann::json& j, const std::string& path, int layers, int heads) {
  if (!j.is_object()) throw Error(path, "a plan is a JSON object with \"targets\"");
  if (!j.contains("targets")) throw Error(path, "missing \"targets\"");
  Plan p;
  p.targets = read_layer_map(j, "targets", path, layers, heads);
  p.frozen_watch = read_layer_map(j, "frozen_watch", path, layers, heads);
  if (p.targets.empty()) throw Error(path, "the plan has no target heads");
  for (const HeadRef& w : p.watch_list())
    if (p.targets.count(w.layer) &&
        std::count(p.targets[w.layer].begin(), p.targets[w.layer].end(), w.head))
      throw Error(path, "head L" + std::to_string(w.layer) + " H" + std::to_string(w.head) +
                            " is both a target and frozen_watch");
  if (j.contains("band")) {
    const nlohmann::json& b = j["band"];
    if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer() ||
        b[0].get<int64_t>() < 0 || b[1].get<int64_t>() < b[0].get<int64_t>() ||
        b[1].get<int64_t>() >= heads)
      throw Error(path, "\"band\" must be [A, B] with 0 <= A <= B < " + std::to_string(heads) +
                            ", got " + b.dump());
    p.band = std::pair{b[0].get<int>(), b[1].get<int>()};
  }
  if (j.contains("bos") && j["bos"].is_boolean()) p.bos = j["bos"];
  if (j.contains("reason") && j["reason"].is_string()) p.reason = j["reason"];
  return p;
}

Plan make_plan(const Diagnosis& d, const PlanOptions& o) {
  const Band band = detect_band(d);
  const bool pass2 = o.mode == PlanOptions::Mode::Pass2;
  std::optional<std::pair<int, int>> range = o.band;
  const bool from_pass1 = !range && pass2 && o.pass1_band;
  if (from_pass1) range = o.pass1_band;
  if (!range && band.found) range = std::pair{band.first, band.last};
  if (!range && pass2)
    throw Error("plan",
                "no sick band in this diagnosis, nor a pass-1 plan to take it from: add --after "
                "RUN/plan.json (the plan of pass 1) or --band A-B");
  if (!range && o.mode == PlanOptions::Mode::Band && o.extra_columns.empty())
    throw Error("plan",
                "no sick band in this diagnosis: use --all-sick, --band A-B or "
                "--extra-columns (or --pass 2, on the result of pass 1)");
  auto in_band = [&](int h) { return range && h >= range->first && h <= range->second; };
  Plan p;
  p.bos = d.bos;
  std::ostringstream why;
  for (int l = 0; l < d.layers; ++l)
    for (int h = 0; h < d.heads; ++h) {
      if (!is_sick(d.class_of(l, h))) continue;
      const bool take = o.mode == PlanOptions::Mode::AllSick ||
                        (o.mode == PlanOptions::Mode::Band && in_band(h)) ||
                        (o.mode == PlanOptions::Mode::Pass2 && !in_band(h));
      if (take) p.targets[l].push_back(h);
    }
  switch (o.mode) {
    case PlanOptions::Mode::AllSick:
      why << "every sick head";
      break;
    case PlanOptions::Mode::Band:
      if (range) why << "sick heads in band " << band_name(*range);
      p.band = range;
      break;
    case PlanOptions::Mode::Pass2:
      why << "sick heads outside band " << band_name(*range) << " (pass 2";
      if (from_pass1) why << "; the band of pass 1, from " << o.pass1_plan;
      why << ")";
      p.band = range;
      break;
  }
  // Extra columns: the band's layers (or all) for whole head-index columns.
  int l_lo = 0, l_hi = d.layers - 1;
  if (band.found && !o.band) l_lo = band.layer_first, l_hi = band.layer_last;
  for (int c : o.extra_columns) {
    if (c < 0 || c >= d.heads)
      throw Error("--extra-columns", "head " + std::to_string(c) +
                                         " does not exist (the model has " +
                                         std::to_string(d.heads) + " heads)");
    for (int l = l_lo; l <= l_hi; ++l) p.targets[l].push_back(c);
    why << (why.tellp() ? " + " : "") << "whole column H" << c << " in layers " << l_lo << "-"
        << l_hi;
  }
  std::set<int> columns;
  int lo = d.layers, hi = -1;
  for (auto& [l, hs] : p.targets) {
    std::sort(hs.begin(), hs.end());
    hs.erase(std::unique(hs.begin(), hs.end()), hs.end());
    columns.insert(hs.begin(), hs.end());
    lo = std::min(lo, l), hi = std::max(hi, l);
  }
  for (auto it = p.targets.begin(); it != p.targets.end();)
    it = it->second.empty() ? p.targets.erase(it) : std::next(it);
  if (p.targets.empty()) throw Error("plan", "no head matches (" + why.str() + "): nothing to do");
  for (int l = lo; l <= hi; ++l)
    for (int h : columns) {
      const auto& t = p.targets.count(l) ? p.targets.at(l) : std::vector<int>{};
      if (!std::count(t.begin(), t.end(), h) && !is_sick(d.class_of(l, h)))
        p.frozen_watch[l].push_back(h);
    }
  p.reason = "from diagnosis of " + d.model + ": " + why.str();
  return p;
}

std::string run_plan_of_checkpoint(const std::string& model) {
  std::error_code ec;
  if (model.empty() || !fs::is_directory(model, ec)) return "";
  fs::path run = up(model);
  if (run.filename() == "checkpoints") run = up(run);
  if (fs::is_regular_file(run / "plan.json", ec) && fs::is_regular_file(run / "config.json", ec))
    return (run / "plan.json").string();
  return "";
}

}  // namespace hs
