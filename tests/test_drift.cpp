// Drift between two diagnoses on hand-built data with known δ: zone membership, counts, means,
// worst cases, columns, class changes, the threshold boundary, the JSON contract and the figure.
#include <gtest/gtest.h>

#include <cmath>

#include "diagnose/drift.h"
#include "util/error.h"

namespace hs {
namespace {

// L x H diagnosis with every bos_mass given (row-major), entropy high enough that no head is
// low-entropy.
Diagnosis make(int L, int H, const std::vector<double>& bos, const std::string& model = "m") {
  Diagnosis d;
  d.model = model;
  d.layers = L;
  d.heads = H;
  d.prompts = {"p"};
  d.tokens = {10};
  d.slopes.assign(size_t(H), 0.5);
  d.metrics.resize(size_t(L) * H);
  for (size_t k = 0; k < d.metrics.size(); ++k) {
    d.metrics[k].bos_mass = bos[k];
    d.metrics[k].entropy = 2.0;
  }
  return d;
}

// Binary fractions, so that every δ below is exact and the boundary cases are what they say.
// 3 layers x 4 heads. Plan targets: layer 0 head 1, layer 2 head 3 -> zone = layers {0, 2} x
// heads {1, 3}: targets (0,1) (2,3); frozen in zone (0,3) (2,1); the other 8 heads are outside.
const std::vector<double> kBefore = {
    0.125, 0.75,  0.125,  0.25,    // layer 0
    0.125, 0.125, 0.5625, 0.125,   // layer 1
    0.25,  0.125, 0.125,  0.96875  // layer 2
};
const std::vector<double> kAfter = {
    0.125, 0.125, 0.1875, 0.25,   // (0,1) target -0.625; (0,2) +0.0625
    0.0,   0.125, 0.6875, 0.125,  // (1,0) -0.125; (1,2) +0.125 (bos-sink -> bos-sink)
    0.25,  0.25,  0.125,  0.25    // (2,1) frozen +0.125; (2,3) target -0.71875 (dead -> healthy)
};

DriftOptions with_plan(double threshold = 0.0625) {
  DriftOptions o;
  o.threshold = threshold;
  o.targets = std::map<int, std::vector<int>>{{0, {1}}, {2, {3}}};
  return o;
}

TEST(Drift, ZoneMembership) {
  const Drift d = compute_drift(make(3, 4, kBefore), make(3, 4, kAfter), with_plan());
  EXPECT_TRUE(d.has_plan);
  EXPECT_EQ(d.group_of(0, 1), DriftGroup::Target);
  EXPECT_EQ(d.group_of(2, 3), DriftGroup::Target);
  EXPECT_EQ(d.group_of(0, 3), DriftGroup::FrozenInZone);
  EXPECT_EQ(d.group_of(2, 1), DriftGroup::FrozenInZone);
  // Layer 1 has no target, so its heads 1 and 3 are outside the zone.
  EXPECT_EQ(d.group_of(1, 1), DriftGroup::Outside);
  EXPECT_EQ(d.group_of(1, 3), DriftGroup::Outside);
  EXPECT_EQ(d.group_of(0, 0), DriftGroup::Outside);
  EXPECT_EQ(d.outside.heads, 8);
  EXPECT_EQ(d.frozen_in_zone.heads, 2);
  EXPECT_EQ(d.targets.heads, 2);
}

TEST(Drift, CountsMeansAndWorst) {
  const Drift d = compute_drift(make(3, 4, kBefore), make(3, 4, kAfter), with_plan());
  EXPECT_EQ(d.at(0, 2), 0.0625);
  EXPECT_EQ(d.at(2, 3), -0.71875);
  // Outside: |δ| = 0, 0.0625, 0.125, 0, 0.125, 0, 0, 0; threshold 0.0625 is not exceeded by
  // 0.0625 itself.
  EXPECT_EQ(d.outside.drifting, 2);
  EXPECT_DOUBLE_EQ(d.outside.mean_abs_delta, 0.3125 / 8);
  ASSERT_TRUE(d.outside.worst);
  // Two heads tie at 0.125: the first in (layer, head) order wins.
  EXPECT_EQ(d.outside.worst->layer, 1);
  EXPECT_EQ(d.outside.worst->head, 0);
  EXPECT_EQ(d.outside.worst->delta, -0.125);
  // Frozen in zone: (0,3) 0, (2,1) +0.125.
  EXPECT_EQ(d.frozen_in_zone.drifting, 1);
  EXPECT_DOUBLE_EQ(d.frozen_in_zone.mean_abs_delta, 0.0625);
  EXPECT_EQ(d.frozen_in_zone.worst->layer, 2);
  EXPECT_EQ(d.frozen_in_zone.worst->head, 1);
  EXPECT_EQ(d.frozen_in_zone.worst->delta, 0.125);
  // Targets: -0.625 and -0.71875.
  EXPECT_EQ(d.targets.drifting, 2);
  EXPECT_DOUBLE_EQ(d.targets.mean_abs_delta, (0.625 + 0.71875) / 2);
  EXPECT_EQ(d.targets.worst->layer, 2);
  EXPECT_EQ(d.targets.worst->head, 3);
}

TEST(Drift, ColumnsLeaveTheTargetsOut) {
  const Drift d = compute_drift(make(3, 4, kBefore), make(3, 4, kAfter), with_plan());
  ASSERT_EQ(d.columns.size(), 4u);
  for (int h = 0; h < 4; ++h) EXPECT_EQ(d.columns[size_t(h)].head, h);
  // Column 1: (0,1) is a target; (1,1) 0 and (2,1) +0.125 remain.
  EXPECT_EQ(d.columns[1].stats.heads, 2);
  EXPECT_EQ(d.columns[1].stats.drifting, 1);
  EXPECT_DOUBLE_EQ(d.columns[1].stats.mean_abs_delta, 0.0625);
  // Column 2: 0.0625 (not over the threshold), 0.125, 0.
  EXPECT_EQ(d.columns[2].stats.heads, 3);
  EXPECT_EQ(d.columns[2].stats.drifting, 1);
  EXPECT_DOUBLE_EQ(d.columns[2].stats.mean_abs_delta, 0.1875 / 3);
  EXPECT_EQ(d.columns[2].stats.worst->layer, 1);
  // Column 3: (2,3) is a target.
  EXPECT_EQ(d.columns[3].stats.heads, 2);
  EXPECT_EQ(d.columns[3].stats.drifting, 0);
}

TEST(Drift, ClassChanges) {
  const Drift d = compute_drift(make(3, 4, kBefore), make(3, 4, kAfter), with_plan());
  // (0,1) bos-sink -> healthy (target), (2,3) dead -> healthy (target); (1,2) stays bos-sink
  // even though it moved.
  ASSERT_EQ(d.class_changes.size(), 2u);
  EXPECT_EQ(d.class_changes[0].layer, 0);
  EXPECT_EQ(d.class_changes[0].head, 1);
  EXPECT_EQ(d.class_changes[0].from, HeadClass::BosSink);
  EXPECT_EQ(d.class_changes[0].to, HeadClass::Healthy);
  EXPECT_EQ(d.class_changes[0].group, DriftGroup::Target);
  EXPECT_EQ(d.class_changes[1].from, HeadClass::Dead);
  EXPECT_EQ(d.class_changes[1].to, HeadClass::Healthy);
}

TEST(Drift, WithoutAPlanEverythingIsOutside) {
  DriftOptions o;
  o.threshold = 0.0625;
  const Drift d = compute_drift(make(3, 4, kBefore), make(3, 4, kAfter), o);
  EXPECT_FALSE(d.has_plan);
  EXPECT_EQ(d.outside.heads, 12);
  EXPECT_EQ(d.frozen_in_zone.heads, 0);
  EXPECT_FALSE(d.frozen_in_zone.worst);
  EXPECT_EQ(d.frozen_in_zone.mean_abs_delta, 0);
  EXPECT_EQ(d.outside.drifting, 5);  // 0.625, 0.125, 0.125, 0.125, 0.71875
  EXPECT_EQ(d.outside.worst->layer, 2);
  EXPECT_EQ(d.outside.worst->head, 3);
  EXPECT_EQ(d.columns[1].stats.heads, 3);  // nothing is left out of the columns
  const nlohmann::json j = to_json(d);
  EXPECT_TRUE(j["frozen_in_zone"]["worst"].is_null());
  EXPECT_EQ(j["plan"], false);
}

TEST(Drift, ThresholdBoundaryIsStrict) {
  const Diagnosis before = make(1, 1, {0.5});
  for (const auto& [after, drifting] :
       {std::pair{0.5625, 0}, std::pair{0.4375, 0}, std::pair{std::nextafter(0.5625, 1.0), 1},
        std::pair{std::nextafter(0.4375, 0.0), 1}}) {
    DriftOptions o;
    o.threshold = 0.0625;
    const Drift d = compute_drift(before, make(1, 1, {after}), o);
    EXPECT_EQ(d.outside.drifting, drifting) << after;
  }
  // Threshold 0: any change drifts, no change does not.
  DriftOptions zero;
  zero.threshold = 0;
  EXPECT_EQ(compute_drift(before, make(1, 1, {0.5}), zero).outside.drifting, 0);
  EXPECT_EQ(compute_drift(before, make(1, 1, {0.5000001}), zero).outside.drifting, 1);
}

TEST(Drift, BadInputsAreErrors) {
  const Diagnosis a = make(3, 4, kBefore);
  DriftOptions o;
  o.before_name = "b.json";
  o.after_name = "a.json";
  try {
    compute_drift(a, make(2, 4, std::vector<double>(8, 0.1)), o);
    FAIL() << "shape mismatch accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "a.json: 2 layers x 4 heads, but b.json has 3 x 4");
  }
  EXPECT_THROW(compute_drift(a, make(3, 5, std::vector<double>(15, 0.1)), o), Error);
  o.targets = std::map<int, std::vector<int>>{{3, {0}}};
  EXPECT_THROW(compute_drift(a, a, o), Error);
  o.targets.reset();
  o.threshold = -1;
  EXPECT_THROW(compute_drift(a, a, o), Error);
  o.threshold = NAN;
  EXPECT_THROW(compute_drift(a, a, o), Error);
}

TEST(Drift, JsonContract) {
  const nlohmann::json j =
      to_json(compute_drift(make(3, 4, kBefore), make(3, 4, kAfter), with_plan()));
  EXPECT_EQ(j["threshold"], 0.0625);
  for (const char* g : {"outside", "frozen_in_zone"}) {
    for (const char* k : {"heads", "drifting", "mean_abs_delta", "worst"})
      EXPECT_TRUE(j[g].contains(k)) << g << "." << k;
    for (const char* k : {"layer", "head", "delta"}) EXPECT_TRUE(j[g]["worst"].contains(k)) << k;
  }
  EXPECT_EQ(j["frozen_in_zone"]["worst"]["delta"], 0.125);
  ASSERT_EQ(j["columns"].size(), 4u);
  for (const char* k : {"head", "heads", "drifting", "mean_abs_delta"})
    EXPECT_TRUE(j["columns"][0].contains(k)) << k;
  ASSERT_EQ(j["class_changes"].size(), 2u);
  EXPECT_EQ(
      j["class_changes"][1],
      (nlohmann::json{
          {"layer", 2}, {"head", 3}, {"from", "dead"}, {"to", "healthy"}, {"group", "target"}}));
  EXPECT_EQ(j["delta"][2][3], -0.71875);
}

TEST(Drift, TableAndFigure) {
  const Diagnosis b = make(3, 4, kBefore, "before<model>"), a = make(3, 4, kAfter);
  const Drift d = compute_drift(b, a, with_plan());
  const std::string t = render_drift_table(d);
  EXPECT_NE(t.find("frozen in zone        2         1    0.0625  L2 H1 +0.1250"), std::string::npos)
      << t;
  EXPECT_NE(t.find("L2 H3  dead -> healthy  (target)"), std::string::npos) << t;

  const std::string s = render_drift_svg(b, a, d, "fig");
  EXPECT_EQ(s.rfind("<svg", 0), 0u);
  EXPECT_NE(s.find("</svg>"), std::string::npos);
  // Three grids of 12 cells; the δ grid marks 2 targets and 2 frozen heads, and outlines the
  // non-target heads over the threshold (2 outside + 1 frozen).
  size_t cells = 0;
  for (size_t p = s.find("class=\"cell\""); p != std::string::npos;
       p = s.find("class=\"cell\"", p + 1))
    ++cells;
  EXPECT_EQ(cells, 36u);
  EXPECT_NE(s.find("<title>L2 H1 δ +0.1250 (0.125 → 0.250), frozen_in_zone, drifting</title>"),
            std::string::npos);
  EXPECT_NE(s.find("id=\"fig-delta\""), std::string::npos);
  EXPECT_NE(s.find("id=\"fig-bos\""), std::string::npos);
  EXPECT_NE(s.find("before&lt;model&gt;"), std::string::npos);
  EXPECT_EQ(s.find("before<model>"), std::string::npos);
  // The δ scale is centred on 0 (near-white) with symmetric ends: the largest non-target |δ|,
  // 0.125, rounds up to ±0.2; the targets' larger changes are clamped to the ends.
  EXPECT_NE(s.find(">+0.2</text>"), std::string::npos);
  EXPECT_NE(s.find(">-0.2</text>"), std::string::npos);
  EXPECT_NE(s.find(">+0.1</text>"), std::string::npos);
  auto fill_after = [&](const std::string& title) {
    const size_t at = s.find(title);
    if (at == std::string::npos) return std::string("missing");
    const size_t f = s.find("fill=\"", at) + 6;
    return s.substr(f, 7);
  };
  EXPECT_EQ(fill_after("L0 H0 δ +0.0000"), "#f7f7f7");
  EXPECT_EQ(fill_after("L2 H3 δ -0.7188"), "#2166ac");
  EXPECT_EQ(fill_after("L0 H1 δ -0.6250"), "#2166ac");
  for (const char* bad : {"<script", "href", "<image", "@import"})
    EXPECT_EQ(s.find(bad), std::string::npos) << bad;
}

}  // namespace
}  // namespace hs
