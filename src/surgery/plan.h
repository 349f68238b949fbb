// A surgery plan: which heads to operate on and which healthy heads to watch for drift.
// Plain JSON a person can edit: {"targets": {"LAYER": [heads]}, "frozen_watch": {...}, ...}.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "diagnose/diagnosis.h"
#include "engine/cpu/train.h"

namespace hs {

struct Plan {
  std::map<int, std::vector<int>> targets, frozen_watch;
  std::string reason;  // what the plan was made from and why (free text)
  bool bos = false;    // whether the diagnosis prepended <s> (re-used when evaluating)

  std::vector<HeadRef> target_list() const;
  std::vector<HeadRef> watch_list() const;
  nlohmann::json to_json() const;
  // Validates against a model: layers and heads in range, no duplicates, at least one target,
  // no head both target and watched. Errors name `path`.
  static Plan from_json(const nlohmann::json& j, const std::string& path, int layers, int heads);
};

struct PlanOptions {
  enum class Mode { Band, Pass2, AllSick } mode = Mode::Band;
  std::optional<std::pair<int, int>> band;  // head indices A-B; nullopt = detected
  std::vector<int> extra_columns;           // every head of these indices, healthy or not
};

// Band: the sick heads whose index is in the band. Pass2: the sick heads outside it. AllSick:
// every sick head. Extra columns add whole head-index columns over the band's layers (all
// layers without a band). frozen_watch: the healthy non-target heads of the target columns
// within the targets' layer range. Throws hs::Error when nothing is selected.
Plan make_plan(const Diagnosis& d, const PlanOptions& o);

}  // namespace hs
