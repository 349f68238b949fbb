// A surgery plan: which heads to operate on and which healthy heads to watch for drift.
// Plain JSON a person can edit: {"targets": {"LAYER": [heads]}, "frozen_watch": {...}, ...}.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "diagnose/diagnosis.h"
#include "engine/cpu/train.h"

namespace hs {

struct Plan {
  std::map<int, std::vector<int>> targets, frozen_watch;
  std::string reason;  // what the plan was made from and why (free text)
  bool bos = false;    // whether the diagnosis prepended <s> (re-used when evaluating)
  // The band (head indices, inclusive) pass 1 took its targets from, or pass 2 planned around.
  // Recorded because pass 1 heals it: the diagnosis pass 2 is planned from shows it no more.
  // Absent for --all-sick, --extra-columns alone and hand-written plans.
  std::optional<std::pair<int, int>> band;

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
  // Pass2 without `band`: pass 1's band, from the plan named by pass1_plan. It comes before the
  // detected band, which after pass 1 is gone or is made of the very heads pass 2 is for.
  std::optional<std::pair<int, int>> pass1_band;
  std::string pass1_plan;
  std::vector<int> extra_columns;  // every head of these indices, healthy or not
};

// Band: the sick heads whose index is in the band. Pass2: the sick heads outside it (a band is
// required: explicit, pass 1's or detected). AllSick: every sick head. Extra columns add whole
// head-index columns over the band's layers (all layers without a band). frozen_watch: the healthy
// non-target heads of the target columns within the targets' layer range. Throws hs::Error when
// nothing is selected.
Plan make_plan(const Diagnosis& d, const PlanOptions& o);

// The plan of the repair run that wrote checkpoint `model` (RUN/best, RUN/final or
// RUN/checkpoints/step-N, as a diagnosis names it): RUN/plan.json when RUN holds it and
// config.json; "" otherwise (a hub id, a model outside a run).
std::string run_plan_of_checkpoint(const std::string& model);

}  // namespace hs
