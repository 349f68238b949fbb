// Head classification, the sick band, the summary, and the three reports (JSON, table, SVG).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "diagnose/diagnosis.h"
#include "util/error.h"

namespace hs {
namespace {

using nlohmann::json;

// One string per layer, one character per head: '.' healthy (distributed), 'l' healthy (local),
// 'S' BOS-sink (bos_mass 0.82), 'D' dead (0.97), 'E' low-entropy. bos_mass values stay clear of
// the histogram's bin edges.
Diagnosis grid(const std::vector<std::string>& rows, const std::string& model = "test/model") {
  Diagnosis d;
  d.model = model;
  d.layers = int(rows.size());
  d.heads = rows.empty() ? 0 : int(rows[0].size());
  d.prompts = {"The diagnostic prompt"};
  d.tokens = {7};
  for (int h = 0; h < d.heads; ++h) d.slopes.push_back(std::exp2(-8.0 * (h + 1) / d.heads));
  for (const std::string& r : rows) {
    EXPECT_EQ(int(r.size()), d.heads);
    for (char c : r) {
      switch (c) {
        case '.':
          d.metrics.push_back({0.12, 2.0, 0.2});
          break;
        case 'l':
          d.metrics.push_back({0.07, 1.5, 0.8});
          break;
        case 'S':
          d.metrics.push_back({0.82, 0.3, 0.05});
          break;
        case 'D':
          d.metrics.push_back({0.97, 0.1, 0.01});
          break;
        case 'E':
          d.metrics.push_back({0.22, 0.3, 0.5});
          break;
        default:
          ADD_FAILURE() << "bad grid character " << c;
      }
    }
  }
  return d;
}

// `n` layers of `row`.
std::vector<std::string> repeat(const std::string& row, int n) { return {size_t(n), row}; }

size_t count(const std::string& s, const std::string& needle) {
  size_t k = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + needle.size()))
    ++k;
  return k;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string l; std::getline(ss, l);) out.push_back(l);
  return out;
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string w; ss >> w;) out.push_back(w);
  return out;
}

size_t columns(const std::string& s) {
  return size_t(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

// ---------------------------------------------------------------------------------------------
// Classification

TEST(Classify, NamesRoundTrip) {
  EXPECT_STREQ(class_name(HeadClass::Healthy), "healthy");
  EXPECT_STREQ(class_name(HeadClass::BosSink), "bos-sink");
  EXPECT_STREQ(class_name(HeadClass::Dead), "dead");
  EXPECT_STREQ(class_name(HeadClass::LowEntropy), "low-entropy");
  for (HeadClass c :
       {HeadClass::Healthy, HeadClass::BosSink, HeadClass::Dead, HeadClass::LowEntropy})
    EXPECT_EQ(parse_class(class_name(c)), c);
  EXPECT_EQ(parse_class("Dead"), std::nullopt);
  EXPECT_EQ(parse_class(""), std::nullopt);
  EXPECT_EQ(parse_class("bos_sink"), std::nullopt);
}

TEST(Classify, DefaultThresholdBoundaries) {
  const Thresholds t;
  auto cls = [&](double bos, double entropy) { return classify({bos, entropy, 0.0}, t); };
  EXPECT_EQ(cls(0.95, 3.0), HeadClass::BosSink);  // dead is strictly above 0.95
  EXPECT_EQ(cls(0.9500001, 3.0), HeadClass::Dead);
  EXPECT_EQ(cls(std::nextafter(0.95, 1.0), 3.0), HeadClass::Dead);
  EXPECT_EQ(cls(1.0, 3.0), HeadClass::Dead);
  EXPECT_EQ(cls(0.5, 3.0), HeadClass::Healthy);  // sink is strictly above 0.5
  EXPECT_EQ(cls(0.5, 0.1), HeadClass::LowEntropy);
  EXPECT_EQ(cls(std::nextafter(0.5, 1.0), 3.0), HeadClass::BosSink);
  EXPECT_EQ(cls(std::nextafter(0.5, 1.0), 0.1), HeadClass::BosSink);  // sinks win over entropy
  EXPECT_EQ(cls(0.95, 0.0), HeadClass::BosSink);
  EXPECT_EQ(cls(0.1, 0.5), HeadClass::Healthy);  // low entropy is strictly below 0.5
  EXPECT_EQ(cls(0.1, std::nextafter(0.5, 0.0)), HeadClass::LowEntropy);
  EXPECT_EQ(cls(0.0, 0.0), HeadClass::LowEntropy);
  EXPECT_EQ(cls(0.0, 5.0), HeadClass::Healthy);
}

TEST(Classify, HealthyPatternBoundary) {
  const Thresholds t;
  EXPECT_STREQ(healthy_pattern({0.1, 2.0, 0.6}, t), "distributed");  // local is strictly above
  EXPECT_STREQ(healthy_pattern({0.1, 2.0, 0.6000001}, t), "local");
  EXPECT_STREQ(healthy_pattern({0.1, 2.0, 0.0}, t), "distributed");
  Thresholds lo;
  lo.local = 0.3;
  EXPECT_STREQ(healthy_pattern({0.1, 2.0, 0.4}, lo), "local");
}

TEST(Classify, NonDefaultThresholds) {
  Thresholds t;
  t.dead = 0.8;
  t.sink = 0.3;
  t.low_entropy = 1.0;
  auto cls = [&](double bos, double entropy) { return classify({bos, entropy, 0.0}, t); };
  EXPECT_EQ(cls(0.81, 3.0), HeadClass::Dead);
  EXPECT_EQ(cls(0.8, 3.0), HeadClass::BosSink);
  EXPECT_EQ(cls(0.31, 3.0), HeadClass::BosSink);
  EXPECT_EQ(cls(0.3, 0.99), HeadClass::LowEntropy);
  EXPECT_EQ(cls(0.3, 1.0), HeadClass::Healthy);
  EXPECT_EQ(classify({0.85, 3.0, 0.0}, Thresholds{}), HeadClass::BosSink);  // defaults differ
  EXPECT_EQ(classify({0.2, 0.7, 0.0}, Thresholds{}), HeadClass::Healthy);

  // sink == dead (allowed): nothing can be a BOS-sink.
  Thresholds eq;
  eq.dead = eq.sink = 0.9;
  EXPECT_EQ(classify({0.9, 3.0, 0.0}, eq), HeadClass::Healthy);
  EXPECT_EQ(classify({0.9000001, 3.0, 0.0}, eq), HeadClass::Dead);
}

// ---------------------------------------------------------------------------------------------
// Band

TEST(Band, LongestRunOfSickIndices) {
  const Diagnosis d = grid({"SS..DDD.....",  //
                            "S...DDS.....",  //
                            "....SSD..E..",  //
                            "............"});
  const Band b = detect_band(d);
  ASSERT_TRUE(b.found);
  EXPECT_EQ(b.first, 4);
  EXPECT_EQ(b.last, 6);
  EXPECT_EQ(b.layer_first, 0);
  EXPECT_EQ(b.layer_last, 2);
  const std::vector<double> want = {0.5, 0.25, 0, 0, 0.75, 0.75, 0.75, 0, 0, 0.25, 0, 0};
  EXPECT_EQ(b.per_index_sick_fraction, want);
}

TEST(Band, TiesGoToTheFirstRun) {
  Band b = detect_band(grid({"SS..SS.."}));
  EXPECT_EQ(b.first, 0);
  EXPECT_EQ(b.last, 1);
  b = detect_band(grid({"..EE.DD."}));
  EXPECT_EQ(b.first, 2);
  EXPECT_EQ(b.last, 3);
  b = detect_band(grid({"S.SS...."}));  // a longer later run wins
  EXPECT_EQ(b.first, 2);
  EXPECT_EQ(b.last, 3);
}

TEST(Band, NoneWhenNoIndexQualifies) {
  Band b = detect_band(grid(repeat("........", 3)));
  EXPECT_FALSE(b.found);
  EXPECT_EQ(b.first, -1);
  EXPECT_EQ(b.last, -1);
  EXPECT_EQ(b.layer_first, -1);
  EXPECT_EQ(b.layer_last, -1);
  EXPECT_EQ(b.per_index_sick_fraction, std::vector<double>(8, 0.0));

  // Every index sick in only 1 of 4 layers: below 0.5, but enough for 0.25.
  Diagnosis d = grid({"S...", ".D..", "..E.", "...S"});
  EXPECT_FALSE(detect_band(d).found);
  d.thresholds.band = 0.25;
  b = detect_band(d);
  ASSERT_TRUE(b.found);
  EXPECT_EQ(b.first, 0);
  EXPECT_EQ(b.last, 3);
  EXPECT_EQ(b.layer_first, 0);
  EXPECT_EQ(b.layer_last, 3);
}

TEST(Band, ThresholdIsInclusive) {
  Diagnosis d = grid({".S..", ".S..", "....", "...."});  // 2 of 4 layers = 0.5
  Band b = detect_band(d);
  ASSERT_TRUE(b.found);
  EXPECT_EQ(b.first, 1);
  EXPECT_EQ(b.last, 1);
  d.thresholds.band = 0.51;
  EXPECT_FALSE(detect_band(d).found);
}

TEST(Band, ZeroThresholdStillNeedsSickHeads) {
  Diagnosis d = grid(repeat("......", 2));
  d.thresholds.band = 0;
  EXPECT_FALSE(detect_band(d).found);
  d = grid({"......", "...D.."});
  d.thresholds.band = 0;
  const Band b = detect_band(d);
  ASSERT_TRUE(b.found);
  EXPECT_EQ(b.first, 3);
  EXPECT_EQ(b.last, 3);
  EXPECT_EQ(b.layer_first, 1);
  EXPECT_EQ(b.layer_last, 1);
}

TEST(Band, AllHeadsSick) {
  const Band b = detect_band(grid(repeat("DDDDSSSSEEEE", 3)));
  ASSERT_TRUE(b.found);
  EXPECT_EQ(b.first, 0);
  EXPECT_EQ(b.last, 11);
  EXPECT_EQ(b.layer_first, 0);
  EXPECT_EQ(b.layer_last, 2);
  EXPECT_EQ(b.per_index_sick_fraction, std::vector<double>(12, 1.0));
}

TEST(Band, AtTheEdgesOfNonPowerOfTwoHeadCounts) {
  // 12 heads, band at the left edge.
  Band b = detect_band(grid({"SSS......S..", "SSD.........", "SSS........."}));
  EXPECT_EQ(b.first, 0);
  EXPECT_EQ(b.last, 2);

  // 112 heads: a run of 7 at the left edge, a longer one of 12 at the right edge.
  std::string row(112, '.');
  std::fill(row.begin(), row.begin() + 7, 'S');
  std::fill(row.begin() + 100, row.end(), 'D');
  std::vector<std::string> rows = repeat(row, 5);
  rows[0] = std::string(112, '.');
  b = detect_band(grid(rows));
  ASSERT_TRUE(b.found);
  EXPECT_EQ(b.first, 100);
  EXPECT_EQ(b.last, 111);
  EXPECT_EQ(b.layer_first, 1);
  EXPECT_EQ(b.layer_last, 4);
  ASSERT_EQ(b.per_index_sick_fraction.size(), 112u);
  EXPECT_DOUBLE_EQ(b.per_index_sick_fraction[111], 0.8);
}

TEST(Band, LayersCountOnlySickHeadsInsideTheBand) {
  const Band b = detect_band(grid({"S.....",  //
                                   "..SS..",  //
                                   "..SS..",  //
                                   "S....."}));
  ASSERT_TRUE(b.found);
  EXPECT_EQ(b.first, 2);  // beats the 1-wide run at head 0
  EXPECT_EQ(b.last, 3);
  EXPECT_EQ(b.layer_first, 1);
  EXPECT_EQ(b.layer_last, 2);
}

TEST(Band, InconsistentDiagnosisIsAnError) {
  Diagnosis d = grid(repeat("SS..", 2));
  d.metrics.pop_back();
  EXPECT_THROW(detect_band(d), Error);
  d = grid(repeat("SS..", 2));
  d.slopes.pop_back();
  EXPECT_THROW(to_json(d), Error);
}

// ---------------------------------------------------------------------------------------------
// Summary

TEST(Summary, CountsAndOperationalFraction) {
  const Summary s = summarize(grid({"..SDE.l.", "DDDD...."}));
  EXPECT_EQ(s.healthy, 9);
  EXPECT_EQ(s.bos_sink, 1);
  EXPECT_EQ(s.dead, 5);
  EXPECT_EQ(s.low_entropy, 1);
  EXPECT_DOUBLE_EQ(s.operational_fraction, 9.0 / 16.0);

  Diagnosis d = grid({"..SDE.l.", "DDDD...."});
  d.thresholds.dead = 0.99;  // the dead heads (0.97) become sinks
  const Summary t = summarize(d);
  EXPECT_EQ(t.dead, 0);
  EXPECT_EQ(t.bos_sink, 6);
}

// ---------------------------------------------------------------------------------------------
// JSON

// The 4-layer, 16-head model of the table tests: band H9-H15 over layers 1-3.
Diagnosis sample() {
  return grid({"l...............",  //
               "...E.....SSSDSSS",  //
               ".........SSDDSSS",  //
               "..E......DSSSSSS"},
              "bigscience/bloom-test");
}

TEST(Json, ContractFields) {
  Diagnosis d = sample();
  d.bos = true;
  d.thresholds.local = 0.65;
  const json j = to_json(d);
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["model"], "bigscience/bloom-test");
  EXPECT_EQ(j["layers"], 4);
  EXPECT_EQ(j["heads"], 16);
  EXPECT_EQ(j["bos"], true);
  EXPECT_EQ(j["prompts"], json({"The diagnostic prompt"}));
  EXPECT_EQ(j["tokens"], json({7}));
  EXPECT_EQ(
      j["thresholds"],
      json({{"dead", 0.95}, {"sink", 0.5}, {"low_entropy", 0.5}, {"local", 0.65}, {"band", 0.5}}));

  const json& hd = j["heads_detail"];
  ASSERT_EQ(hd.size(), 64u);
  for (int l = 0; l < 4; ++l)
    for (int h = 0; h < 16; ++h) {
      const json& e = hd[size_t(l * 16 + h)];
      EXPECT_EQ(e.size(), 11u) << e;
      for (const char* k : {"layer", "head", "slope", "bos_mass", "entropy", "local_mass",
                            "bos_mass_std", "entropy_std", "local_mass_std", "class", "pattern"})
        EXPECT_TRUE(e.contains(k)) << k;
      EXPECT_EQ(e["layer"], l);
      EXPECT_EQ(e["head"], h);
      EXPECT_EQ(e["slope"], d.slopes[size_t(h)]);
      EXPECT_EQ(e["bos_mass"], d.at(l, h).bos_mass);
      const HeadClass c = d.class_of(l, h);
      EXPECT_EQ(e["class"], class_name(c));
      if (is_sick(c)) {
        EXPECT_TRUE(e["pattern"].is_null()) << e;
      }
    }
  EXPECT_EQ(hd[0]["pattern"], "local");
  EXPECT_EQ(hd[1]["pattern"], "distributed");
  EXPECT_EQ(hd[16 + 3]["class"], "low-entropy");
  EXPECT_EQ(hd[16 + 9]["class"], "bos-sink");
  EXPECT_EQ(hd[16 + 12]["class"], "dead");

  EXPECT_EQ(j["summary"], json({{"healthy", 41},
                                {"bos_sink", 17},
                                {"dead", 4},
                                {"low_entropy", 2},
                                {"operational_fraction", 41.0 / 64.0}}));
  const json& b = j["band"];
  EXPECT_EQ(b["found"], true);
  EXPECT_EQ(b["first"], 9);
  EXPECT_EQ(b["last"], 15);
  EXPECT_EQ(b["layer_first"], 1);
  EXPECT_EQ(b["layer_last"], 3);
  ASSERT_EQ(b["per_index_sick_fraction"].size(), 16u);
  EXPECT_EQ(b["per_index_sick_fraction"][3], 0.25);
  EXPECT_EQ(b["per_index_sick_fraction"][15], 0.75);
}

TEST(Json, NoBandHasNullIndices) {
  const json b = to_json(grid(repeat("....", 2)))["band"];
  EXPECT_EQ(b["found"], false);
  for (const char* k : {"first", "last", "layer_first", "layer_last"})
    EXPECT_TRUE(b[k].is_null()) << k;
  EXPECT_EQ(b["per_index_sick_fraction"], json({0.0, 0.0, 0.0, 0.0}));
}

Diagnosis awkward() {
  Diagnosis d = sample();
  d.model = "odd \"name\" ü/ÿ";
  d.bos = true;
  d.prompts = {"first ü prompt", "second\nline \"quoted\""};
  d.tokens = {12, 40};
  d.thresholds = {0.9, 0.4, 0.7, 0.55, 1.0 / 3.0};
  for (size_t k = 0; k < d.metrics.size(); ++k) {
    HeadMetrics& m = d.metrics[k];
    m.bos_mass = std::fmod(0.1 + 0.2 + double(k) / 7.0, 1.0);
    m.entropy = 1.0 / 3.0 + double(k) * 1e-17;
    m.local_mass = std::sqrt(double(k)) / 9.0;
    m.bos_mass_std = 1e-300 * double(k);
    m.entropy_std = 0.1 * double(k % 5);
    m.local_mass_std = std::nextafter(0.25, 1.0);
  }
  return d;
}

TEST(Json, RoundTripIsExact) {
  const Diagnosis d = awkward();
  const json j1 = to_json(d);
  const Diagnosis back = diagnosis_from_json(json::parse(j1.dump()), "d.json");
  EXPECT_EQ(to_json(back), j1);
  EXPECT_EQ(back.model, d.model);
  EXPECT_EQ(back.prompts, d.prompts);
  EXPECT_EQ(back.tokens, d.tokens);
  EXPECT_EQ(back.slopes, d.slopes);
  EXPECT_EQ(back.thresholds.band, d.thresholds.band);
  EXPECT_EQ(back.thresholds.low_entropy, 0.7);
  ASSERT_EQ(back.metrics.size(), d.metrics.size());
  for (size_t k = 0; k < d.metrics.size(); ++k) {
    EXPECT_EQ(back.metrics[k].bos_mass, d.metrics[k].bos_mass) << k;
    EXPECT_EQ(back.metrics[k].entropy, d.metrics[k].entropy) << k;
    EXPECT_EQ(back.metrics[k].local_mass, d.metrics[k].local_mass) << k;
    EXPECT_EQ(back.metrics[k].bos_mass_std, d.metrics[k].bos_mass_std) << k;
    EXPECT_EQ(back.metrics[k].entropy_std, d.metrics[k].entropy_std) << k;
    EXPECT_EQ(back.metrics[k].local_mass_std, d.metrics[k].local_mass_std) << k;
  }
}

TEST(Json, HeadsDetailMayComeInAnyOrder) {
  const Diagnosis d = awkward();
  json j = to_json(d);
  std::reverse(j["heads_detail"].begin(), j["heads_detail"].end());
  EXPECT_EQ(to_json(diagnosis_from_json(j, "d.json")), to_json(d));
}

// diagnosis_from_json must throw one line "runs/d.json: ..." holding every part.
void expect_error(const json& j, const std::vector<std::string>& parts) {
  try {
    diagnosis_from_json(j, "runs/d.json");
    ADD_FAILURE() << "no error for " << parts[0];
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_EQ(w.rfind("runs/d.json: ", 0), 0u) << w;
    EXPECT_EQ(w.find('\n'), std::string::npos) << w;
    for (const std::string& p : parts) EXPECT_NE(w.find(p), std::string::npos) << w;
  }
}

TEST(JsonErrors, NamePathAndField) {
  const json good = to_json(grid(repeat("S...", 2)));
  ASSERT_NO_THROW(diagnosis_from_json(good, "runs/d.json"));
  json j;

  expect_error(json::array(), {"expected a JSON object"});
  j = good;
  j.erase("heads");
  expect_error(j, {"missing key 'heads'"});
  j = good;
  j["heads_detail"][3].erase("entropy");
  expect_error(j, {"heads_detail[3]", "missing key 'entropy'"});
  j = good;
  j["heads_detail"][5]["bos_mass"] = "0.5";
  expect_error(j, {"heads_detail[5].bos_mass", "expected a number"});
  j = good;
  j["heads_detail"].erase(7);
  expect_error(j, {"heads_detail", "7 entries", "8"});
  j = good;
  j["heads_detail"][2]["head"] = 4;
  expect_error(j, {"heads_detail[2].head", "out of range"});
  j = good;
  j["heads_detail"][2]["layer"] = -1;
  expect_error(j, {"heads_detail[2].layer", "out of range"});
  j = good;
  j["heads_detail"][6]["layer"] = 0;
  j["heads_detail"][6]["head"] = 1;
  expect_error(j, {"heads_detail[6]", "layer 0 head 1", "twice"});
  j = good;
  j["heads_detail"][5]["slope"] = 0.125;
  expect_error(j, {"heads_detail[5].slope", "head 1"});
  j = good;
  j["layers"] = "2";
  expect_error(j, {"layers", "expected an integer"});
  j = good;
  j["layers"] = std::numeric_limits<uint64_t>::max();  // would wrap if read as signed
  expect_error(j, {"layers", "18446744073709551615 is out of range"});
  j = good;
  j["heads"] = 4.0;
  expect_error(j, {"heads", "expected an integer"});
  j = good;
  j["tokens"] = {7, 8};
  expect_error(j, {"tokens", "2 entries for 1 prompts"});
  j = good;
  j["tokens"] = {0};
  expect_error(j, {"tokens[0]", "out of range"});
  j = good;
  j["prompts"] = {1};
  j["tokens"] = {1};
  expect_error(j, {"prompts[0]", "expected a string"});
  j = good;
  j["thresholds"].erase("band");
  expect_error(j, {"thresholds", "missing key 'band'"});
  j = good;
  j["thresholds"]["sink"] = 0.99;
  expect_error(j, {"thresholds", "sink"});
  j = good;
  j["bos"] = 1;
  expect_error(j, {"bos", "expected a boolean"});
  j = good;
  j["version"] = 2;
  expect_error(j, {"version", "unsupported"});
  j = good;
  j["version"] = "1";
  expect_error(j, {"version"});
}

// A file without "version" (written by hand, or before the key was documented) is version 1.
TEST(JsonErrors, NoVersionReadsAsVersionOne) {
  const json good = to_json(grid(repeat("S...", 2)));
  json j = good;
  j.erase("version");
  EXPECT_EQ(to_json(diagnosis_from_json(j, "d.json")), good);
}

// ---------------------------------------------------------------------------------------------
// Table

// The row of the per-layer table for `label` ("0", "1", ..., "total") with its wrapped
// continuation lines, split into words.
std::vector<std::string> table_row(const std::string& table, const std::string& label) {
  const auto lines = lines_of(table);
  std::vector<std::string> out;
  bool in_table = false;
  for (const std::string& l : lines) {
    const auto w = words(l);
    if (w.empty()) continue;
    if (w[0] == "layer") in_table = true;
    if (!out.empty() && l[0] == ' ' && w[0][0] == 'H') {
      out.insert(out.end(), w.begin(), w.end());
    } else if (!out.empty()) {
      break;
    } else if (in_table && w[0] == label) {
      out = w;
    }
  }
  return out;
}

TEST(Table, CountsBandSlopesAndLegend) {
  const std::string t = render_table(sample());
  EXPECT_NE(t.find("bigscience/bloom-test: 4 layers × 16 heads, 1 prompt (7 tokens), no <s> "
                   "prepended\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("S = BOS-sink"), std::string::npos) << t;
  EXPECT_NE(t.find("D = DEAD"), std::string::npos) << t;
  EXPECT_NE(t.find("E = low-entropy"), std::string::npos) << t;

  EXPECT_EQ(table_row(t, "0"), (std::vector<std::string>{"0", "16", "0", "0", "0"})) << t;
  EXPECT_EQ(table_row(t, "1"),
            (std::vector<std::string>{"1", "8", "6", "1", "1", "H3:E", "H9:S.82", "H10:S.82",
                                      "H11:S.82", "H12:D.97", "H13:S.82", "H14:S.82", "H15:S.82"}))
      << t;
  EXPECT_EQ(table_row(t, "2").size(), 5u + 7u) << t;
  EXPECT_EQ(table_row(t, "total"), (std::vector<std::string>{"total", "41", "17", "4", "2"})) << t;
  EXPECT_NE(t.find("operational: 64.1%"), std::string::npos) << t;
  EXPECT_NE(t.find("(41 of 64: 1 local, 40 distributed)"), std::string::npos) << t;
  EXPECT_NE(t.find("sick band: heads H9–H15 (fraction of sick layers ≥ 0.50), layers 1–3\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("0.75*"), std::string::npos) << t;  // band members are starred
  EXPECT_NE(t.find("0.25 "), std::string::npos) << t;  // H3 is not
  EXPECT_NE(t.find("0.7071"), std::string::npos) << t;
  EXPECT_NE(t.find("0.003906"), std::string::npos) << t;
  EXPECT_EQ(t.find("spread"), std::string::npos) << t;  // one prompt: no spread
  for (const std::string& l : lines_of(t)) EXPECT_LE(columns(l), 100u) << l;
}

TEST(Table, BosNoBandAndSpread) {
  Diagnosis d = grid(repeat("....l...", 3));
  d.bos = true;
  d.prompts = {"one", "two"};
  d.tokens = {3, 4};
  d.metrics[2 * 8 + 5].bos_mass_std = 0.3;
  d.metrics[1].bos_mass_std = 0.2;
  const std::string t = render_table(d);
  EXPECT_NE(t.find("2 prompts (3, 4 tokens), <s> prepended"), std::string::npos) << t;
  EXPECT_NE(t.find("no sick band"), std::string::npos) << t;
  EXPECT_NE(t.find("operational: 100.0%"), std::string::npos) << t;
  EXPECT_NE(t.find("largest std 0.300 at L2 H5"), std::string::npos) << t;
}

TEST(Table, LongModelNameGetsItsOwnLine) {
  Diagnosis d = grid({"S..."}, "/data/checkpoints/" + std::string(60, 'm'));
  d.prompts = {"a", "b", "c"};
  d.tokens = {100, 200, 300};
  const auto lines = lines_of(render_table(d));
  ASSERT_GE(lines.size(), 2u);
  EXPECT_EQ(lines[0], d.model);
  EXPECT_EQ(lines[1], "  1 layers × 4 heads, 3 prompts (100, 200, 300 tokens), no <s> prepended");
}

TEST(Table, PromptsAreShownOnOneLineWithoutControlCharacters) {
  Diagnosis d = grid({"...."});
  d.prompts = {"line one\nline two\x1b[31m " + std::string(200, 'x')};
  const std::string t = render_table(d);
  EXPECT_EQ(t.find('\x1b'), std::string::npos);
  EXPECT_NE(t.find("\"line one line two"), std::string::npos) << t;
  for (const std::string& l : lines_of(t)) EXPECT_LE(columns(l), 100u) << l;
}

TEST(Table, WideModelsWrapTheSickList) {
  for (int heads : {32, 112}) {
    Diagnosis d = grid(repeat(std::string(size_t(heads), 'D'), 3));
    d.model = "wide";
    const std::string t = render_table(d);
    for (const std::string& l : lines_of(t)) EXPECT_LE(columns(l), 100u) << l;
    for (int h = 0; h < heads; ++h)
      EXPECT_EQ(count(t, " H" + std::to_string(h) + ":D.97"), 3u) << h << "\n" << t;
    EXPECT_NE(t.find("sick band: heads H0–H" + std::to_string(heads - 1)), std::string::npos);
  }
}

// ---------------------------------------------------------------------------------------------
// SVG

// Minimal XML well-formedness check: one root element, tags balance and nest, attributes are
// quoted, no raw '<' in values, '&' only in known entities, no control characters. Returns
// "" or the first problem.
std::string xml_problem(const std::string& s) {
  auto entity_at = [&](size_t p) {
    const size_t e = s.find(';', p);
    if (e == std::string::npos) return false;
    const std::string name = s.substr(p + 1, e - p - 1);
    if (name == "amp" || name == "lt" || name == "gt" || name == "quot" || name == "apos")
      return true;
    return name.size() > 1 && name[0] == '#' &&
           std::all_of(name.begin() + 1, name.end(), [](char c) { return std::isdigit(c); });
  };
  auto name_char = [](char c) {
    return std::isalnum((unsigned char)c) || c == '-' || c == ':' || c == '_';
  };
  std::vector<std::string> open;
  int roots = 0;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = (unsigned char)s[i];
    if (c < 0x20 && c != '\n' && c != '\r' && c != '\t') return "control character";
    if (c == '&' && !entity_at(i)) return "raw & at " + std::to_string(i);
    if (c != '<') {
      if (open.empty() && !std::isspace(c)) return "text outside the root";
      ++i;
      continue;
    }
    if (s.compare(i, 4, "<!--") == 0) {
      const size_t e = s.find("-->", i);
      if (e == std::string::npos) return "unclosed comment";
      i = e + 3;
      continue;
    }
    if (s.compare(i, 2, "</") == 0) {
      const size_t e = s.find('>', i);
      if (e == std::string::npos) return "unclosed end tag";
      const std::string name = s.substr(i + 2, e - i - 2);
      if (open.empty() || open.back() != name) return "unexpected </" + name + ">";
      open.pop_back();
      i = e + 1;
      continue;
    }
    size_t p = i + 1;
    while (p < s.size() && name_char(s[p])) ++p;
    const std::string name = s.substr(i + 1, p - i - 1);
    if (name.empty()) return "raw < at " + std::to_string(i);
    if (open.empty() && roots++ > 0) return "second root <" + name + ">";
    for (;;) {
      const size_t before = p;
      while (p < s.size() && std::isspace((unsigned char)s[p])) ++p;
      if (p >= s.size()) return "unclosed <" + name;
      if (s.compare(p, 2, "/>") == 0) {
        p += 2;
        break;
      }
      if (s[p] == '>') {
        open.push_back(name);
        ++p;
        break;
      }
      if (p == before) return "no space before attribute in <" + name + ">";
      const size_t a = p;
      while (p < s.size() && name_char(s[p])) ++p;
      if (p == a || p + 1 >= s.size() || s[p] != '=' || (s[p + 1] != '"' && s[p + 1] != '\''))
        return "bad attribute in <" + name + ">";
      const char q = s[p + 1];
      const size_t e = s.find(q, p + 2);
      if (e == std::string::npos) return "unclosed attribute in <" + name + ">";
      for (size_t k = p + 2; k < e; ++k) {
        if (s[k] == '<') return "raw < in attribute of <" + name + ">";
        if (s[k] == '&' && !entity_at(k)) return "raw & in attribute of <" + name + ">";
      }
      p = e + 1;
    }
    i = p;
  }
  if (!open.empty()) return "unclosed <" + open.back() + ">";
  return roots == 1 ? "" : "no root element";
}

TEST(Svg, TheCheckerCatchesBadXml) {
  EXPECT_EQ(xml_problem("<a x=\"1\" y='2'><b/>t &amp; u &#38;<c></c></a>\n"), "");
  EXPECT_NE(xml_problem("<a><b></a>"), "");
  EXPECT_NE(xml_problem("<a>"), "");
  EXPECT_NE(xml_problem("<a/><b/>"), "");
  EXPECT_NE(xml_problem("<a>x & y</a>"), "");
  EXPECT_NE(xml_problem("<a>x < y</a>"), "");
  EXPECT_NE(xml_problem("<a x=\"<\"/>"), "");
  EXPECT_NE(xml_problem("<a x=1/>"), "");
  EXPECT_NE(xml_problem("<a x=\"1\"y=\"2\"/>"), "");
  EXPECT_NE(xml_problem("<a>\x01</a>"), "");
}

TEST(Svg, WellFormedWithAllParts) {
  const std::string s = render_svg(sample());
  EXPECT_EQ(s.rfind("<svg", 0), 0u);
  EXPECT_NE(s.find("xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  EXPECT_EQ(xml_problem(s), "");
  EXPECT_EQ(count(s, "<rect class=\"cell\""), 64u);
  // Letters: the class of every sick cell.
  EXPECT_EQ(count(s, ">D</text>"), 4u);
  EXPECT_EQ(count(s, ">S</text>"), 17u);
  EXPECT_EQ(count(s, ">E</text>"), 2u);
  EXPECT_NE(s.find("<title>L1 H9 bos 0.82 bos-sink"), std::string::npos);
  EXPECT_NE(s.find("<title>L0 H0 bos 0.07 healthy local"), std::string::npos);
  EXPECT_EQ(count(s, "class=\"band\""), 1u);
  // Histogram: 20 bars holding every head, and the two dashed thresholds.
  EXPECT_EQ(count(s, "<rect class=\"bar\""), 20u);
  EXPECT_NE(s.find("0.80–0.85: 17 heads"), std::string::npos);
  EXPECT_NE(s.find("0.95–1.00: 4 heads"), std::string::npos);
  EXPECT_NE(s.find("0.10–0.15: 40 heads"), std::string::npos);
  EXPECT_NE(s.find("0.05–0.10: 1 head<"), std::string::npos);
  EXPECT_NE(s.find("0.20–0.25: 2 heads"), std::string::npos);
  EXPECT_EQ(count(s, "class=\"threshold\""), 2u);
  EXPECT_EQ(count(s, "stroke-dasharray"), 3u);  // the thresholds and the band box
  EXPECT_NE(s.find("41 healthy, 17 bos-sink, 4 dead, 2 low-entropy"), std::string::npos);
  // Self-contained: nothing to fetch or run.
  for (const char* bad : {"<script", "href", "<image", "<foreignObject", "@import", "onload="})
    EXPECT_EQ(s.find(bad), std::string::npos) << bad;
}

TEST(Svg, EscapesTheModelName) {
  Diagnosis d = grid(repeat("S...", 2), "a<b>&\"c\"");
  std::string s = render_svg(d);
  EXPECT_EQ(xml_problem(s), "");
  EXPECT_NE(s.find("a&lt;b&gt;&amp;&quot;c&quot;"), std::string::npos);
  EXPECT_EQ(s.find("a<b>"), std::string::npos);

  // A control character, an invalid byte, valid 2- and 4-byte characters, a truncated one.
  d.model = "m\x01\xff ü🙂\xc3";
  s = render_svg(d);
  EXPECT_EQ(xml_problem(s), "");
  EXPECT_EQ(s.find('\xff'), std::string::npos);
  EXPECT_NE(s.find("m \xEF\xBF\xBD ü🙂\xEF\xBF\xBD<"), std::string::npos);
  d.model = "x\xf4\x90\x80\x80";  // beyond U+10FFFF
  EXPECT_EQ(render_svg(d).find('\xf4'), std::string::npos);
}

// Found by fuzz_diagnosis: a diagnosis file with a bos mass of -2e18 made the histogram convert
// it to int (undefined); values outside [0, 1] fall into the end bins.
TEST(Svg, OutOfRangeMassesGoToTheEndBins) {
  Diagnosis d = grid(repeat("S...", 2));
  d.metrics[0].bos_mass = -2.12966e18;
  d.metrics[1].bos_mass = 1e300;
  d.metrics[2].bos_mass = INFINITY;
  const std::string s = render_svg(d);
  EXPECT_EQ(xml_problem(s), "");
}

TEST(Svg, LargeModelsScaleTheCells) {
  const Diagnosis d = grid(repeat(std::string(50, 'S') + std::string(62, '.'), 70));
  const std::string s = render_svg(d);
  EXPECT_EQ(xml_problem(s), "");
  EXPECT_EQ(count(s, "<rect class=\"cell\""), 70u * 112u);
  EXPECT_NE(s.find("width=\"8\" height=\"8\""), std::string::npos);  // cells at their minimum
  const double width = std::stod(s.substr(s.find("width=\"") + 7));
  EXPECT_GE(width, 112 * 8);
  EXPECT_LE(width, 1600);
  // Head labels every k-th column, not all 112.
  EXPECT_EQ(s.find(">1</text>"), std::string::npos);
  EXPECT_NE(s.find(">110</text>"), std::string::npos);
}

TEST(Svg, NoBandNoBox) {
  const std::string s = render_svg(grid(repeat("....", 3)));
  EXPECT_EQ(xml_problem(s), "");
  EXPECT_EQ(count(s, "class=\"band\""), 0u);
  EXPECT_NE(s.find("no sick band"), std::string::npos);
}

}  // namespace
}  // namespace hs
