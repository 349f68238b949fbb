#include "diagnose/diagnosis.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>

#include "util/error.h"

namespace hs {

using nlohmann::json;

const char* class_name(HeadClass c) {
  switch (c) {
    case HeadClass::Healthy:
      return "healthy";
    case HeadClass::BosSink:
      return "bos-sink";
    case HeadClass::Dead:
      return "dead";
    case HeadClass::LowEntropy:
      return "low-entropy";
  }
  return "?";
}

char class_letter(HeadClass c) {
  switch (c) {
    case HeadClass::BosSink:
      return 'S';
    case HeadClass::Dead:
      return 'D';
    case HeadClass::LowEntropy:
      return 'E';
    case HeadClass::Healthy:
      break;
  }
  return ' ';
}

std::optional<HeadClass> parse_class(const std::string& name) {
  for (HeadClass c :
       {HeadClass::Healthy, HeadClass::BosSink, HeadClass::Dead, HeadClass::LowEntropy})
    if (name == class_name(c)) return c;
  return std::nullopt;
}

HeadClass classify(const HeadMetrics& m, const Thresholds& t) {
  if (m.bos_mass > t.dead) return HeadClass::Dead;
  if (m.bos_mass > t.sink) return HeadClass::BosSink;
  if (m.entropy < t.low_entropy) return HeadClass::LowEntropy;
  return HeadClass::Healthy;
}

const char* healthy_pattern(const HeadMetrics& m, const Thresholds& t) {
  return m.local_mass > t.local ? "local" : "distributed";
}

void check_consistent(const Diagnosis& d) {
  auto fail = [](const std::string& what) { throw Error("diagnosis", what); };
  if (d.layers < 0 || d.heads < 0) fail("negative layer or head count");
  const size_t lh = size_t(d.layers) * size_t(d.heads);
  if (d.metrics.size() != lh)
    fail("metrics has " + std::to_string(d.metrics.size()) +
         " entries, layers x heads = " + std::to_string(lh));
  if (d.slopes.size() != size_t(d.heads))
    fail("slopes has " + std::to_string(d.slopes.size()) + " entries for " +
         std::to_string(d.heads) + " heads");
  if (d.tokens.size() != d.prompts.size())
    fail("token counts for " + std::to_string(d.tokens.size()) + " prompts, but " +
         std::to_string(d.prompts.size()) + " prompts");
}

Band detect_band(const Diagnosis& d) {
  check_consistent(d);
  Band b;
  std::vector<int> sick(size_t(d.heads), 0);
  for (int l = 0; l < d.layers; ++l)
    for (int h = 0; h < d.heads; ++h)
      if (is_sick(d.class_of(l, h))) ++sick[size_t(h)];
  b.per_index_sick_fraction.resize(size_t(d.heads));
  for (int h = 0; h < d.heads; ++h)
    b.per_index_sick_fraction[size_t(h)] =
        d.layers > 0 ? double(sick[size_t(h)]) / double(d.layers) : 0.0;

  auto qualifies = [&](int h) {
    return sick[size_t(h)] > 0 && b.per_index_sick_fraction[size_t(h)] >= d.thresholds.band;
  };
  int best = 0;
  for (int h = 0; h < d.heads;) {
    if (!qualifies(h)) {
      ++h;
      continue;
    }
    int e = h;
    while (e + 1 < d.heads && qualifies(e + 1)) ++e;
    if (e - h + 1 > best) {  // strictly longer: the first of equal runs wins
      best = e - h + 1;
      b.first = h;
      b.last = e;
    }
    h = e + 1;
  }
  if (best == 0) return b;
  b.found = true;
  for (int l = 0; l < d.layers; ++l)
    for (int h = b.first; h <= b.last; ++h)
      if (is_sick(d.class_of(l, h))) {
        if (b.layer_first < 0) b.layer_first = l;
        b.layer_last = l;
      }
  return b;
}

Summary summarize(const Diagnosis& d) {
  check_consistent(d);
  Summary s;
  for (const HeadMetrics& m : d.metrics) switch (classify(m, d.thresholds)) {
      case HeadClass::Healthy:
        ++s.healthy;
        break;
      case HeadClass::BosSink:
        ++s.bos_sink;
        break;
      case HeadClass::Dead:
        ++s.dead;
        break;
      case HeadClass::LowEntropy:
        ++s.low_entropy;
        break;
    }
  s.operational_fraction = d.metrics.empty() ? 0.0 : double(s.healthy) / double(d.metrics.size());
  return s;
}

json to_json(const Diagnosis& d) {
  check_consistent(d);
  const Thresholds& t = d.thresholds;
  json details = json::array();
  for (int l = 0; l < d.layers; ++l)
    for (int h = 0; h < d.heads; ++h) {
      const HeadMetrics& m = d.at(l, h);
      const HeadClass c = classify(m, t);
      details.push_back({{"layer", l},
                         {"head", h},
                         {"slope", d.slopes[size_t(h)]},
                         {"bos_mass", m.bos_mass},
                         {"entropy", m.entropy},
                         {"local_mass", m.local_mass},
                         {"bos_mass_std", m.bos_mass_std},
                         {"entropy_std", m.entropy_std},
                         {"local_mass_std", m.local_mass_std},
                         {"class", class_name(c)},
                         {"pattern", is_sick(c) ? json(nullptr) : json(healthy_pattern(m, t))}});
    }
  const Summary s = summarize(d);
  const Band b = detect_band(d);
  auto index_or_null = [&](int v) { return b.found ? json(v) : json(nullptr); };
  return {{"version", 1},
          {"model", d.model},
          {"family", d.family},
          {"layers", d.layers},
          {"heads", d.heads},
          {"bos", d.bos},
          {"prompts", d.prompts},
          {"tokens", d.tokens},
          {"thresholds",
           {{"dead", t.dead},
            {"sink", t.sink},
            {"low_entropy", t.low_entropy},
            {"local", t.local},
            {"band", t.band}}},
          {"heads_detail", std::move(details)},
          {"summary",
           {{"healthy", s.healthy},
            {"bos_sink", s.bos_sink},
            {"dead", s.dead},
            {"low_entropy", s.low_entropy},
            {"operational_fraction", s.operational_fraction}}},
          {"band",
           {{"found", b.found},
            {"first", index_or_null(b.first)},
            {"last", index_or_null(b.last)},
            {"layer_first", index_or_null(b.layer_first)},
            {"layer_last", index_or_null(b.layer_last)},
            {"per_index_sick_fraction", b.per_index_sick_fraction}}}};
}

namespace {

// Typed access to the diagnosis JSON; every error names the file and the field's location,
// e.g. "diag.json: heads_detail[3].entropy: expected a number, got string".
class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& where, const std::string& what) const {
    throw Error(path_, where.empty() ? what : where + ": " + what);
  }

  const json& field(const json& obj, const std::string& where, const char* key) const {
    if (!obj.is_object()) fail(where, std::string("expected an object, got ") + obj.type_name());
    const auto it = obj.find(key);
    if (it == obj.end()) fail(where, std::string("missing key '") + key + "'");
    return *it;
  }

  double number(const json& v, const std::string& where) const {
    if (!v.is_number()) fail(where, std::string("expected a number, got ") + v.type_name());
    return v.get<double>();
  }

  int integer(const json& v, const std::string& where, int64_t lo, int64_t hi) const {
    if (!v.is_number_integer())
      fail(where, std::string("expected an integer, got ") + v.type_name() +
                      (v.is_number() ? " " + v.dump() : ""));
    // Unsigned values above INT64_MAX would wrap in get<int64_t>, so compare them unsigned.
    const bool in_range = v.is_number_unsigned()
                              ? v.get<uint64_t>() >= uint64_t(std::max<int64_t>(lo, 0)) &&
                                    v.get<uint64_t>() <= uint64_t(hi)
                              : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
    if (!in_range)
      fail(where,
           v.dump() + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return int(v.get<int64_t>());
  }

  const json& array(const json& v, const std::string& where) const {
    if (!v.is_array()) fail(where, std::string("expected an array, got ") + v.type_name());
    return v;
  }

 private:
  std::string path_;
};

}  // namespace

Diagnosis diagnosis_from_json(const json& j, const std::string& path) {
  const Reader r(path);
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  auto sub = [](const std::string& where, const char* key) {
    return where.empty() ? std::string(key) : where + "." + key;
  };
  auto num = [&](const json& obj, const std::string& where, const char* key) {
    return r.number(r.field(obj, where, key), sub(where, key));
  };

  if (!j.is_object()) r.fail("", std::string("expected a JSON object, got ") + j.type_name());
  // Files written before the key was documented (or by hand without it) are version 1.
  const int version = j.contains("version") ? r.integer(j.at("version"), "version", 0, kIntMax) : 1;
  if (version != 1)
    r.fail("version", "unsupported version " + std::to_string(version) + " (this reads 1)");

  Diagnosis d;
  const json& model = r.field(j, "", "model");
  if (!model.is_string())
    r.fail("model", std::string("expected a string, got ") + model.type_name());
  d.model = model.get<std::string>();
  if (const auto f = j.find("family"); f != j.end()) {
    if (!f->is_string()) r.fail("family", std::string("expected a string, got ") + f->type_name());
    d.family = f->get<std::string>();
  }
  d.layers = r.integer(r.field(j, "", "layers"), "layers", 1, kIntMax);
  d.heads = r.integer(r.field(j, "", "heads"), "heads", 1, kIntMax);
  const json& bos = r.field(j, "", "bos");
  if (!bos.is_boolean()) r.fail("bos", std::string("expected a boolean, got ") + bos.type_name());
  d.bos = bos.get<bool>();

  const json& prompts = r.array(r.field(j, "", "prompts"), "prompts");
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (!prompts[i].is_string())
      r.fail("prompts[" + std::to_string(i) + "]",
             std::string("expected a string, got ") + prompts[i].type_name());
    d.prompts.push_back(prompts[i].get<std::string>());
  }
  const json& tokens = r.array(r.field(j, "", "tokens"), "tokens");
  if (tokens.size() != prompts.size())
    r.fail("tokens", std::to_string(tokens.size()) + " entries for " +
                         std::to_string(prompts.size()) + " prompts");
  for (size_t i = 0; i < tokens.size(); ++i)
    d.tokens.push_back(r.integer(tokens[i], "tokens[" + std::to_string(i) + "]", 1, kIntMax));

  const json& th = r.field(j, "", "thresholds");
  Thresholds& t = d.thresholds;
  t.dead = num(th, "thresholds", "dead");
  t.sink = num(th, "thresholds", "sink");
  t.low_entropy = num(th, "thresholds", "low_entropy");
  t.local = num(th, "thresholds", "local");
  t.band = num(th, "thresholds", "band");
  for (double v : {t.dead, t.sink, t.low_entropy, t.local, t.band})
    if (!(v >= 0)) r.fail("thresholds", "must be non-negative numbers");
  if (t.sink > t.dead) r.fail("thresholds", "sink must not exceed dead");

  // class, pattern, summary and band follow from the metrics and thresholds, so they are
  // recomputed rather than read (and cannot disagree with them).
  const json& details = r.array(r.field(j, "", "heads_detail"), "heads_detail");
  const uint64_t lh = uint64_t(d.layers) * uint64_t(d.heads);
  if (details.size() != lh)
    r.fail("heads_detail", std::to_string(details.size()) +
                               " entries, expected layers x heads = " + std::to_string(lh));
  d.metrics.resize(size_t(lh));
  d.slopes.resize(size_t(d.heads));
  std::vector<bool> seen(size_t(lh), false);
  for (size_t i = 0; i < details.size(); ++i) {
    const std::string where = "heads_detail[" + std::to_string(i) + "]";
    const json& e = details[i];
    const int l = r.integer(r.field(e, where, "layer"), where + ".layer", 0, d.layers - 1);
    const int h = r.integer(r.field(e, where, "head"), where + ".head", 0, d.heads - 1);
    const size_t k = size_t(l) * size_t(d.heads) + size_t(h);
    if (seen[k])
      r.fail(where, "layer " + std::to_string(l) + " head " + std::to_string(h) + " appears twice");
    seen[k] = true;
    HeadMetrics& m = d.metrics[k];
    m.bos_mass = num(e, where, "bos_mass");
    m.entropy = num(e, where, "entropy");
    m.local_mass = num(e, where, "local_mass");
    m.bos_mass_std = num(e, where, "bos_mass_std");
    m.entropy_std = num(e, where, "entropy_std");
    m.local_mass_std = num(e, where, "local_mass_std");
    const double slope = num(e, where, "slope");
    if (l == 0) d.slopes[size_t(h)] = slope;
  }
  // A slope belongs to a head index, so every layer must agree with layer 0 (checked once all
  // entries, in any order, have been read and validated).
  for (size_t i = 0; i < details.size(); ++i) {
    const json& e = details[i];
    const int h = e["head"].get<int>();
    if (e["slope"].get<double>() != d.slopes[size_t(h)])
      r.fail("heads_detail[" + std::to_string(i) + "].slope",
             "differs from layer 0's slope of head " + std::to_string(h));
  }
  return d;
}

}  // namespace hs
