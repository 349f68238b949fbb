// Redistribution analysis between two diagnoses of the same architecture (the paper's tables
// 4.3-4.5): per head δ = bos_after − bos_before, summarised for the untouched heads outside the
// surgical zone, the frozen heads inside it, the targets, and per head-index column; plus the
// heads whose class changed.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "diagnose/diagnosis.h"

namespace hs {

// Where a head sits relative to the surgery. The zone is the rectangle of the plan: layers that
// have a target x head indices that are a target in any layer.
enum class DriftGroup { Outside, FrozenInZone, Target };
const char* drift_group_name(DriftGroup g);  // "outside" | "frozen_in_zone" | "target"

struct HeadDelta {
  int layer = 0, head = 0;
  double delta = 0;
};

struct DriftStats {
  int heads = 0, drifting = 0;     // drifting: |δ| > threshold
  double mean_abs_delta = 0;       // 0 when there are no heads
  std::optional<HeadDelta> worst;  // largest |δ|; the first in (layer, head) order on ties
};

struct DriftColumn {
  int head = 0;
  DriftStats stats;
};

struct ClassChange {
  int layer = 0, head = 0;
  HeadClass from = HeadClass::Healthy, to = HeadClass::Healthy;
  DriftGroup group = DriftGroup::Outside;
};

struct Drift {
  double threshold = 0.05;
  bool has_plan = false;
  int layers = 0, heads = 0;
  std::string before_model, after_model;
  std::vector<double> delta;      // [layers * heads], index l * heads + h
  std::vector<DriftGroup> group;  // [layers * heads]
  DriftStats outside, frozen_in_zone, targets;
  // One per head index: the non-target heads of that column (a column that is all targets has
  // heads = 0), since the targets' own change would hide the drift of their frozen neighbours.
  std::vector<DriftColumn> columns;
  std::vector<ClassChange> class_changes;  // every head, targets included, in (layer, head) order

  double at(int l, int h) const { return delta[size_t(l) * heads + h]; }
  DriftGroup group_of(int l, int h) const { return group[size_t(l) * heads + h]; }
};

struct DriftOptions {
  double threshold = 0.05;
  // The plan's targets {layer: [heads]}; nullopt = no plan, every head is "outside".
  std::optional<std::map<int, std::vector<int>>> targets;
  // Names for errors, e.g. the files the diagnoses came from.
  std::string before_name = "before", after_name = "after";
};

// Throws hs::Error when the shapes differ, a target is out of range or the threshold is negative
// or not a number. Each diagnosis classifies its heads with its own thresholds.
Drift compute_drift(const Diagnosis& before, const Diagnosis& after, const DriftOptions& o);

// JSON contract of `headsurgeon drift --json` (see README).
nlohmann::json to_json(const Drift& d);
// The groups, the columns and the class changes as a text table.
std::string render_drift_table(const Drift& d);
// Self-contained SVG: before and after bos_mass heatmaps and the δ heatmap (diverging scale
// centred at 0), each with its colour bar. `id` prefixes the gradient ids so that several
// figures can share an HTML page.
std::string render_drift_svg(const Diagnosis& before, const Diagnosis& after, const Drift& d,
                             const std::string& id = "hs-drift");

}  // namespace hs
