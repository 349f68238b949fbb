// `drift` and `report` through the binary: diagnosis files and models as inputs, the JSON
// contract, the diagnoses a repair run keeps, and the HTML report of a real run.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "golden_data.h"
#include "scratch_test.h"
#include "test_util.h"
#include "tiny_run.h"

namespace {

namespace fs = std::filesystem;
using hs::test::slurp;
using nlohmann::json;

const std::string kTiny8 = std::string(HS_TEST_DATA) + "/golden/models/tiny8";

using hs::test::Result;

class DriftReport : public hs::test::ScratchTest<> {
 protected:
  // tiny8 with the query rows of layer 2, head 3 scaled: only that head's attention changes
  // (layer 2 is the last, so nothing downstream of it is diagnosed).
  fs::path edited_model() {
    const fs::path m = dir_ / "edited";
    hs::test::copy_model_edited(kTiny8, m, [](const std::string& name, std::vector<std::byte>& b) {
      if (name != "transformer.h.2.self_attention.query_key_value.weight") return;
      const size_t d = 64, hd = 8, head = 3;
      auto* w = reinterpret_cast<float*>(b.data());
      for (size_t r = head * 3 * hd; r < head * 3 * hd + hd; ++r)
        for (size_t c = 0; c < d; ++c) w[r * d + c] *= 8;
    });
    return m;
  }
};

TEST_F(DriftReport, HelpAndUsage) {
  for (const char* sub : {"drift", "report"}) {
    const Result r = run(std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0) << sub;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << sub;
  }
  EXPECT_EQ(run("drift " + kTiny8).code, 2);      // AFTER missing
  EXPECT_EQ(run("report " + path("x")).code, 2);  // -o missing
  EXPECT_EQ(run("drift a.json b.json --threshold -1").code, 2);
}

TEST_F(DriftReport, DriftOfTwoDiagnosisFiles) {
  ASSERT_EQ(run("diagnose " + kTiny8 + " -q --json " + path("before.json")).code, 0);
  ASSERT_EQ(run("diagnose " + edited_model().string() + " -q --json " + path("after.json")).code,
            0);
  write("plan.json", R"({"targets": {"1": [3], "2": [5]}})");

  Result r = run("drift " + path("before.json") + " " + path("after.json") + " --plan " +
                 path("plan.json") + " --threshold 0 --json " + path("drift.json") + " --svg " +
                 path("drift.svg"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("frozen in zone"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("class changes:"), std::string::npos) << r.out;
  const json j = json::parse(slurp(dir_ / "drift.json"));
  for (const char* k : {"threshold", "outside", "frozen_in_zone", "columns", "class_changes"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["threshold"], 0.0);
  // Zone = layers {1, 2} x heads {3, 5}: (1,5) and (2,3) frozen; the edited head is (2,3).
  EXPECT_EQ(j["frozen_in_zone"]["heads"], 2);
  EXPECT_EQ(j["frozen_in_zone"]["drifting"], 1);
  EXPECT_EQ(j["frozen_in_zone"]["worst"]["layer"], 2);
  EXPECT_EQ(j["frozen_in_zone"]["worst"]["head"], 3);
  EXPECT_EQ(j["outside"]["heads"], 20);
  EXPECT_EQ(j["outside"]["drifting"], 0);
  EXPECT_EQ(j["outside"]["mean_abs_delta"], 0.0);
  ASSERT_EQ(j["columns"].size(), 8u);
  EXPECT_EQ(j["columns"][3]["heads"], 2);  // (1,3) is a target
  EXPECT_EQ(j["columns"][3]["drifting"], 1);
  const std::string svg = slurp(dir_ / "drift.svg");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("δ = after − before"), std::string::npos);

  // --json - : JSON only; a diagnosis against itself: nothing moves.
  r = run("drift " + path("before.json") + " " + path("before.json") + " --json -");
  ASSERT_EQ(r.code, 0) << r.err;
  const json same = json::parse(r.out);
  EXPECT_EQ(same["outside"]["heads"], 24);
  EXPECT_EQ(same["outside"]["drifting"], 0);
  EXPECT_EQ(same["outside"]["mean_abs_delta"], 0.0);
  EXPECT_EQ(same["class_changes"].size(), 0u);
}

TEST_F(DriftReport, DriftOfAModelAgainstAnEditedCopy) {
  const fs::path edited = edited_model();
  const Result r = run("drift " + kTiny8 + " " + edited.string() + " --threshold 0 --json -");
  ASSERT_EQ(r.code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["plan"], false);
  EXPECT_EQ(j["outside"]["heads"], 24);
  EXPECT_EQ(j["outside"]["drifting"], 1);
  EXPECT_EQ(j["outside"]["worst"]["layer"], 2);
  EXPECT_EQ(j["outside"]["worst"]["head"], 3);
  EXPECT_EQ(j["frozen_in_zone"]["heads"], 0);
  EXPECT_TRUE(j["frozen_in_zone"]["worst"].is_null());
  for (int l = 0; l < 3; ++l)
    for (int h = 0; h < 8; ++h)
      if (l != 2 || h != 3) {
        EXPECT_EQ(j["delta"][l][h], 0.0) << l << " " << h;
      }
  EXPECT_NE(double(j["delta"][2][3]), 0.0);

  // A diagnosis file on one side and a model on the other measure the same thing.
  ASSERT_EQ(run("diagnose " + kTiny8 + " -q --json " + path("before.json")).code, 0);
  const Result mixed =
      run("drift " + path("before.json") + " " + edited.string() + " --threshold 0 --json -");
  ASSERT_EQ(mixed.code, 0) << mixed.err;
  EXPECT_EQ(json::parse(mixed.out)["delta"], j["delta"]);
  // ... unless the prompts differ, which is worth a warning.
  const Result bos =
      run("drift " + path("before.json") + " " + edited.string() + " --bos --json -");
  ASSERT_EQ(bos.code, 0) << bos.err;
  EXPECT_NE(bos.err.find("warning"), std::string::npos) << bos.err;
}

TEST_F(DriftReport, DriftErrorsNameTheirFile) {
  ASSERT_EQ(run("diagnose " + kTiny8 + " -q --json " + path("d.json")).code, 0);
  // The same diagnosis cut to two layers: a valid file of another shape.
  json small = json::parse(slurp(dir_ / "d.json"));
  small["layers"] = 2;
  json kept = json::array();
  for (const json& e : small["heads_detail"])
    if (e["layer"] != 2) kept.push_back(e);
  small["heads_detail"] = kept;
  write("small.json", small.dump());
  expect_error(run("drift " + path("d.json") + " " + path("small.json")),
               {path("small.json"), "2 layers x 8 heads", path("d.json") + " has 3 x 8"});
  expect_error(run("drift " + path("d.json") + " " + path("missing.json")), {path("missing.json")});
  write("broken.json", "{\"version\": 1");
  expect_error(run("drift " + path("broken.json") + " " + path("d.json")), {path("broken.json")});
  expect_error(run("drift " + path("d.json") + " " + path("no-such-model")),
               {path("no-such-model")});
  write("plan.json", R"({"targets": {"1": [9]}})");
  expect_error(
      run("drift " + path("d.json") + " " + path("d.json") + " --plan " + path("plan.json")),
      {path("plan.json"), "head 9"});
}

TEST_F(DriftReport, RepairKeepsDiagnosesAndTheReportShowsTheRun) {
  ASSERT_EQ(hs::test::tiny_repair_run(dir_, "run", 2, 5), 0) << slurp(dir_ / "repair.err");
  const fs::path run_dir = dir_ / "run";
  const json traj = json::parse(slurp(run_dir / "trajectory.json"));
  ASSERT_GE(traj.size(), 4u);  // sub-epoch points and epoch ends
  ASSERT_TRUE(fs::exists(run_dir / "diagnosis_before.json"));
  // One diagnosis per evaluation, in the format of `diagnose --json`.
  for (const json& e : traj) {
    const fs::path d = run_dir / "diagnoses" / ("step-" + std::to_string(int(e["step"])) + ".json");
    ASSERT_TRUE(fs::exists(d)) << d;
    const json dj = json::parse(slurp(d));
    EXPECT_EQ(dj["summary"], e["summary"]);
    EXPECT_EQ(dj["heads_detail"].size(), 24u);
  }
  // drift reads them; its frozen-in-zone heads are the plan's zone minus its targets.
  const std::string last = "step-" + std::to_string(int(traj.back()["step"])) + ".json";
  const Result dr = run("drift " + (run_dir / "diagnosis_before.json").string() + " " +
                        (run_dir / "diagnoses" / last).string() + " --plan " +
                        (run_dir / "plan.json").string() + " --json -");
  ASSERT_EQ(dr.code, 0) << dr.err;
  const json dj = json::parse(dr.out);
  EXPECT_EQ(dj["targets"]["heads"], 3);
  EXPECT_EQ(dj["frozen_in_zone"]["heads"], 3);  // layers {0, 2} x heads {4, 6, 7} minus targets
  EXPECT_EQ(dj["outside"]["heads"], 18);

  // Generated text may hold markup; the report must show it, not interpret it.
  json edited = traj;
  edited[0]["generations"].push_back(
      {{"prompt", "x"}, {"text", "x<script>alert(1)</script> & <img src=x onerror=alert(2)>"}});
  std::ofstream(run_dir / "trajectory.json") << edited.dump(1);

  const Result r = run("report " + run_dir.string() + " -o " + path("report.html"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "wrote " + path("report.html") + "\n");
  const std::string h = slurp(dir_ / "report.html");
  EXPECT_EQ(h.rfind("<!DOCTYPE html>", 0), 0u);
  // Self-contained: nothing fetched, nothing run.
  for (const char* bad :
       {"src=\"http", "<link", "<script", "<img", "<iframe", "@import", "url(http"})
    EXPECT_EQ(h.find(bad), std::string::npos) << bad;
  for (size_t at = h.find("http"); at != std::string::npos; at = h.find("http", at + 1))
    EXPECT_EQ(h.compare(at, 26, "http://www.w3.org/2000/svg"), 0) << h.substr(at, 40);
  EXPECT_NE(h.find("<b>x</b>&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img"),
            std::string::npos);
  for (const char* id : {"summary", "heatmaps", "histogram", "trajectory", "drift", "generations",
                         "drift-groups", "drift-columns", "evaluations"})
    EXPECT_NE(h.find(std::string("id=\"") + id + "\""), std::string::npos) << id;
  // The drift figure, the histogram and three trajectory charts.
  size_t svgs = 0;
  for (size_t at = h.find("<svg "); at != std::string::npos; at = h.find("<svg ", at + 1)) ++svgs;
  EXPECT_EQ(svgs, 5u);
  size_t closes = 0;
  for (size_t at = h.find("</svg>"); at != std::string::npos; at = h.find("</svg>", at + 1))
    ++closes;
  EXPECT_EQ(closes, svgs);
  // One point per evaluation in the held-out PPL chart; the best step is named.
  size_t best = 0;
  for (size_t i = 1; i < traj.size(); ++i)
    if (double(traj[i]["heldout_ppl"]) < double(traj[best]["heldout_ppl"])) best = i;
  const std::string best_step = std::to_string(int(traj[best]["step"]));
  EXPECT_NE(h.find("<td>best step</td><td>" + best_step + " "), std::string::npos);
  EXPECT_NE(h.find("After: step " + best_step + ", the best held-out perplexity"),
            std::string::npos);
  size_t points = 0;
  for (size_t at = h.find("<title>held-out PPL: step"); at != std::string::npos;
       at = h.find("<title>held-out PPL: step", at + 1))
    ++points;
  EXPECT_EQ(points, traj.size());
}

TEST_F(DriftReport, ReportOfAShortRunAndOfMissingPieces) {
  ASSERT_EQ(hs::test::tiny_repair_run(dir_, "run", 1, 0), 0) << slurp(dir_ / "repair.err");
  const fs::path run_dir = dir_ / "run";
  ASSERT_EQ(json::parse(slurp(run_dir / "trajectory.json")).size(), 1u);
  Result r = run("report " + run_dir.string() + " -o " + path("one.html"));
  ASSERT_EQ(r.code, 0) << r.err;
  std::string h = slurp(dir_ / "one.html");
  EXPECT_EQ(h.find("no data"), std::string::npos);  // a single point is still drawn
  EXPECT_EQ(h.find("class=\"missing\""), std::string::npos);

  // A run from before repair kept diagnoses: the figures that need them say so.
  fs::remove(run_dir / "diagnosis_before.json");
  r = run("report " + run_dir.string() + " -o " + path("nodiag.html"));
  ASSERT_EQ(r.code, 0) << r.err;
  h = slurp(dir_ / "nodiag.html");
  EXPECT_NE(h.find("diagnosis_before.json is missing"), std::string::npos);
  EXPECT_NE(h.find("id=\"trajectory\""), std::string::npos);

  // Interrupted before its first evaluation: no trajectory yet.
  fs::remove(run_dir / "trajectory.json");
  r = run("report " + run_dir.string() + " -o -");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("No evaluation yet."), std::string::npos);
  EXPECT_EQ(r.out.find("wrote"), std::string::npos);

  std::ofstream(run_dir / "trajectory.json") << "[1, 2]";
  expect_error(run("report " + run_dir.string() + " -o " + path("x.html")),
               {(run_dir / "trajectory.json").string()});
  EXPECT_FALSE(fs::exists(dir_ / "x.html"));
}

// Two passes on one page: pass 2 repairs pass 1's best checkpoint; the page shows the heads
// before pass 1 and after each pass (the figures of the diagnoses on disk), then each pass.
TEST_F(DriftReport, ReportOfTwoPassesShowsThemInOrder) {
  ASSERT_EQ(hs::test::tiny_repair_run(dir_, "pass1", 1, 0), 0) << slurp(dir_ / "repair.err");
  write("plan2.json", R"({"targets": {"1": [2]}, "frozen_watch": {"1": [3]}})");
  const Result rep =
      run("repair " + path("pass1/best") + " --plan " + path("plan2.json") + " --corpus " +
          path("corpus.txt") + " -o " + path("pass2") +
          " --seq 32 --accum 4 --epochs 1 --eval-every 1 --gen-tokens 4 -q --lr 1e-2");
  ASSERT_EQ(rep.code, 0) << rep.err;
  const Result r =
      run("report " + path("pass1") + " " + path("pass2") + " -o " + path("both.html"));
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string h = slurp(dir_ / "both.html");
  EXPECT_EQ(h.find("class=\"missing\""), std::string::npos);

  // Every id once; the overview first, then pass 1's sections, then pass 2's.
  std::set<std::string> ids;
  for (size_t at = h.find(" id=\""); at != std::string::npos; at = h.find(" id=\"", at + 1)) {
    const size_t from = at + 5;
    EXPECT_TRUE(ids.insert(h.substr(from, h.find('"', from) - from)).second) << h.substr(from, 30);
  }
  size_t last = 0;
  for (const char* id : {"passes", "stages", "summary-pass1", "heatmaps-pass1", "drift-pass1",
                         "trajectory-pass1", "generations-pass1", "summary-pass2", "heatmaps-pass2",
                         "drift-pass2", "trajectory-pass2", "generations-pass2"}) {
    const size_t at = h.find(std::string("id=\"") + id + "\"");
    ASSERT_NE(at, std::string::npos) << id;
    EXPECT_GT(at, last) << id;
    last = at;
  }
  // The stages: before pass 1 is pass 1's input, after each pass its best step's diagnosis.
  auto healthy = [&](const fs::path& diag) {
    int n = 0;
    const json dj = json::parse(slurp(diag));
    for (const json& d : dj["heads_detail"]) n += d["class"] == "healthy";
    return std::to_string(n) + "/24 healthy";
  };
  auto best_diagnosis = [&](const std::string& run_dir) {
    const json traj = json::parse(slurp(dir_ / run_dir / "trajectory.json"));
    size_t best = 0;
    for (size_t i = 1; i < traj.size(); ++i)
      if (double(traj[i]["heldout_ppl"]) < double(traj[best]["heldout_ppl"])) best = i;
    return dir_ / run_dir / "diagnoses" /
           ("step-" + std::to_string(int(traj[best]["step"])) + ".json");
  };
  size_t at = 0;
  for (const std::string& stage :
       {"before pass 1: " + healthy(dir_ / "pass1" / "diagnosis_before.json"),
        "after pass 1: " + healthy(best_diagnosis("pass1")),
        "after pass 2: " + healthy(best_diagnosis("pass2"))}) {
    at = h.find(stage, at);
    EXPECT_NE(at, std::string::npos) << stage;
  }
  // One SVG for the stages, then each pass's drift, histogram and three trajectory charts.
  size_t svgs = 0;
  for (size_t i = h.find("<svg "); i != std::string::npos; i = h.find("<svg ", i + 1)) ++svgs;
  EXPECT_EQ(svgs, 11u);

  // Given the other way round, the page says pass 2 did not start from pass 1's run.
  ASSERT_EQ(run("report " + path("pass2") + " " + path("pass1") + " -o " + path("rev.html")).code,
            0);
  EXPECT_NE(slurp(dir_ / "rev.html")
                .find("which is not a checkpoint of the run of pass 1 (" + path("pass2") + ")"),
            std::string::npos);
  expect_error(run("report " + path("pass1") + " " + kTiny8 + " -o " + path("r.html")),
               {kTiny8, "plan.json"});
}

TEST_F(DriftReport, ReportOfSomethingElseIsOneLineNamingIt) {
  fs::create_directories(dir_ / "empty");
  expect_error(run("report " + path("empty") + " -o " + path("r.html")),
               {path("empty"), "not a repair run directory"});
  expect_error(run("report " + kTiny8 + " -o " + path("r.html")), {kTiny8, "plan.json"});
  expect_error(run("report " + path("nowhere") + " -o " + path("r.html")), {path("nowhere")});
  expect_error(run("report " + path("empty") + " -o " + path("no/dir/r.html")), {"r.html"});
}

}  // namespace
