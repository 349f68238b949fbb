// A diagnosis: per-head attention statistics of a model on one or more prompts, the class of
// every head (docs/numerics.md §1), the sick band, and its reports (text table, JSON, SVG).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace hs {

enum class HeadClass { Healthy, BosSink, Dead, LowEntropy };
const char* class_name(HeadClass c);  // "healthy" | "bos-sink" | "dead" | "low-entropy"
std::optional<HeadClass> parse_class(const std::string& name);
// One-letter marker in tables and figures: S (bos-sink), D (dead), E (low-entropy), ' ' healthy.
char class_letter(HeadClass c);

struct Thresholds {
  double dead = 0.95;         // DEAD: bos_mass > dead
  double sink = 0.50;         // BOS-sink: sink < bos_mass <= dead
  double low_entropy = 0.50;  // low-entropy: bos_mass <= sink and entropy < low_entropy
  double local = 0.6;         // healthy pattern "local" when local_mass > local
  double band = 0.5;  // a head index is in the band when >= this fraction of layers are sick
};

// Means over the prompts; *_std the standard deviation over prompts (0 for one prompt).
struct HeadMetrics {
  double bos_mass = 0, entropy = 0, local_mass = 0;
  double bos_mass_std = 0, entropy_std = 0, local_mass_std = 0;
};

HeadClass classify(const HeadMetrics& m, const Thresholds& t);
inline bool is_sick(HeadClass c) { return c != HeadClass::Healthy; }
// Attention pattern of a healthy head: "local" when local_mass > t.local, else "distributed".
const char* healthy_pattern(const HeadMetrics& m, const Thresholds& t);

struct Band {
  bool found = false;
  int first = -1, last = -1;                    // head indices, inclusive
  int layer_first = -1, layer_last = -1;        // layers holding a sick head of the band
  std::vector<double> per_index_sick_fraction;  // [H]: sick layers / L
};

struct Diagnosis {
  std::string model;
  std::string family;  // "bloom", "mpt", "falcon" ("" in files written before it was recorded)
  int layers = 0, heads = 0;
  bool bos = false;  // whether <s> was prepended
  std::vector<std::string> prompts;
  std::vector<int> tokens;     // tokens per prompt
  std::vector<double> slopes;  // [H]
  Thresholds thresholds;
  std::vector<HeadMetrics> metrics;  // [layers * heads], index l * heads + h

  const HeadMetrics& at(int l, int h) const { return metrics[size_t(l) * heads + h]; }
  HeadClass class_of(int l, int h) const { return classify(at(l, h), thresholds); }
};

// Throws hs::Error("diagnosis: ...") unless metrics has layers * heads entries, slopes has heads
// and tokens as many as prompts. The functions below check it before indexing.
void check_consistent(const Diagnosis& d);

// Longest run of consecutive head indices whose sick fraction is >= t.band and > 0 (a "band" of
// healthy heads means nothing, even with t.band = 0); ties: the first.
Band detect_band(const Diagnosis& d);

struct Summary {
  int healthy = 0, bos_sink = 0, dead = 0, low_entropy = 0;
  double operational_fraction = 0;  // healthy / all
};
Summary summarize(const Diagnosis& d);

// JSON contract of `headsurgeon diagnose --json` (see README).
nlohmann::json to_json(const Diagnosis& d);
// Reads that JSON back (for plan/drift). Errors name `path`.
Diagnosis diagnosis_from_json(const nlohmann::json& j, const std::string& path);

// Per-layer table, totals, operational fraction, band and slopes: what `diagnose` prints.
std::string render_table(const Diagnosis& d);
// Self-contained SVG: layer x head heatmap of bos_mass with classes marked, and the histogram
// of bos_mass over all heads.
std::string render_svg(const Diagnosis& d);

}  // namespace hs
