#include "report/run_report.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>
#include <vector>

#include "diagnose/drift.h"
#include "diagnose/svg.h"
#include "surgery/plan.h"
#include "util/error.h"
#include "util/files.h"

namespace hs {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using svg::fmt;
using svg::xml;

// A number of a trajectory entry; NaN when absent, null or not a number, so that a run written
// by another version still renders.
double number(const json& e, const char* key) {
  const auto it = e.find(key);
  return it != e.end() && it->is_number() ? it->get<double>() : NAN;
}

std::string str(const json& e, const char* key) {
  const auto it = e.find(key);
  if (it == e.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string cell(double v, const char* f = "%.4g") {
  return std::isfinite(v) ? fmt(f, v) : std::string("–");
}

std::optional<Diagnosis> read_diagnosis(const fs::path& p) {
  if (!fs::is_regular_file(p)) return std::nullopt;
  return diagnosis_from_json(read_json_file(p.string()), p.string());
}

struct Run {
  fs::path dir;
  json config, trajectory = json::array();
  Plan plan;
  std::optional<Diagnosis> before, after;
  int64_t after_step = -1;
  std::string after_why;
  int best = -1;  // index into trajectory of the best held-out PPL
};

Run load(const std::string& run_dir) {
  Run r;
  r.dir = run_dir;
  std::error_code ec;
  if (!fs::is_directory(r.dir, ec)) throw Error(run_dir, "not a directory");
  for (const char* f : {"plan.json", "config.json"})
    if (!fs::is_regular_file(r.dir / f, ec))
      throw Error(run_dir, std::string("not a repair run directory (no ") + f + ")");
  r.config = read_json_file((r.dir / "config.json").string());
  if (!r.config.is_object()) throw Error((r.dir / "config.json").string(), "expected an object");
  r.before = read_diagnosis(r.dir / "diagnosis_before.json");
  const std::string plan_path = (r.dir / "plan.json").string();
  r.plan =
      Plan::from_json(read_json_file(plan_path), plan_path, r.before ? r.before->layers : INT_MAX,
                      r.before ? r.before->heads : INT_MAX);
  const fs::path tp = r.dir / "trajectory.json";
  if (fs::is_regular_file(tp, ec)) {
    r.trajectory = read_json_file(tp.string());
    if (!r.trajectory.is_array()) throw Error(tp.string(), "expected an array of evaluations");
    for (const json& e : r.trajectory)
      if (!e.is_object()) throw Error(tp.string(), "every evaluation must be an object");
  }
  // The first of the lowest held-out PPLs, as repair keeps it in best/.
  for (size_t i = 0; i < r.trajectory.size(); ++i) {
    const double p = number(r.trajectory[i], "heldout_ppl");
    if (std::isfinite(p) && (r.best < 0 || p < number(r.trajectory[size_t(r.best)], "heldout_ppl")))
      r.best = int(i);
  }
  // "After" is the best step's diagnosis, else the last one stored; the figures name the
  // diagnosed checkpoint rather than the run folder repair records as the model.
  auto use = [&](size_t i, const char* why) {
    const double step = number(r.trajectory[i], "step");
    if (!std::isfinite(step)) return false;
    const std::string name = fmt("step-%.0f", step);
    r.after = read_diagnosis(r.dir / "diagnoses" / (name + ".json"));
    if (!r.after) return false;
    r.after->model = (r.dir / "checkpoints" / name).string();
    r.after_step = int64_t(step);
    r.after_why = why;
    return true;
  };
  if (r.best < 0 || !use(size_t(r.best), "the best held-out perplexity"))
    for (size_t i = r.trajectory.size(); i-- > 0;)
      if (use(i, "the last evaluation with a stored diagnosis")) break;
  return r;
}

// One run's sections on the page: plain ids and titles for a single run; on a page of several
// passes, ids end in "-passK" (unique in the document) and titles start with "Pass K: ".
struct Part {
  std::string id, title;
};

constexpr const char* kCss = R"(
body { font-family: Helvetica, Arial, sans-serif; font-size: 14px; color: #222; margin: 24px;
       max-width: 1400px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 18px; border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; }
td.l, th.l { text-align: left; }
table.kv td:first-child { text-align: left; font-weight: bold; background: #f7f7f7; }
table.kv td { text-align: left; }
.figure { overflow-x: auto; margin: 8px 0; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.missing { color: #8a5a00; background: #fff6e0; padding: 6px 10px; border-left: 3px solid #e0a000; }
.gen { white-space: pre-wrap; font-family: monospace; text-align: left; max-width: 900px; }
.gen b { color: #555; }
tr.best td { background: #eef6ee; }
)";

std::string missing(const std::string& what) {
  return "<p class=\"missing\">" + xml(what) + "</p>\n";
}

std::string summary_section(const Run& r, const Part& part) {
  const json& c = r.config;
  size_t targets = 0, watched = 0;
  for (const auto& [l, hs] : r.plan.targets) targets += hs.size();
  for (const auto& [l, hs] : r.plan.frozen_watch) watched += hs.size();
  std::string o = "<section id=\"summary" + part.id + "\">\n<h2>" + part.title +
                  "Run summary</h2>\n<table class=\"kv\">\n";
  auto row = [&](const std::string& k, const std::string& v) {
    o += "<tr><td>" + xml(k) + "</td><td>" + v + "</td></tr>\n";
  };
  row("model", xml(str(c, "model")));
  row("run directory", xml(r.dir.string()));
  row("plan", xml(fmt("%zu target heads in %zu layers, %zu healthy heads watched", targets,
                      r.plan.targets.size(), watched)) +
                  (r.plan.reason.empty() ? "" : "<br>" + xml(r.plan.reason)));
  row("training", xml("lr " + str(c, "lr") + ", " + str(c, "accum") + " × " + str(c, "seq") +
                      " tokens per step, " + str(c, "epochs") + " epochs (" +
                      str(c, "steps_per_epoch") + " steps each), warm-up " + str(c, "warmup") +
                      ", clip " + str(c, "clip") + ", seed " + str(c, "seed") + ", " +
                      (str(c, "reinit") != "false" ? "re-initialised (" + str(c, "init") + ")"
                                                   : "no re-initialisation (control)")));
  const json* last = r.trajectory.empty() ? nullptr : &r.trajectory.back();
  row("steps", last ? xml(cell(number(*last, "step"), "%.0f") + " of " + str(c, "total_steps"))
                    : "no evaluation yet");
  row("evaluations", std::to_string(r.trajectory.size()));
  if (r.best >= 0) {
    const json& b = r.trajectory[size_t(r.best)];
    row("best step",
        xml(cell(number(b, "step"), "%.0f") + " (epoch " + cell(number(b, "epoch"), "%.0f") + ")"));
    row("best held-out PPL", xml(cell(number(b, "heldout_ppl"), "%.4f")));
    row("heads woken at best",
        xml(cell(number(b, "heads_woken"), "%.0f") + " of " + cell(number(b, "targets"), "%.0f")));
  } else {
    row("best step", "–");
    row("best held-out PPL", "–");
  }
  if (last) row("wall time", xml(cell(number(*last, "seconds"), "%.1f") + " s"));
  return o + "</table>\n</section>\n";
}

// Both diagnoses' bos_mass in one histogram, before in grey.
std::string histogram_svg(const Diagnosis& before, const Diagnosis& after, int64_t step) {
  svg::Histogram h{60, 80, 560, 240, "bos_mass over all heads, before and after", {}};
  h.series.push_back({"before", "#a0a0a0", {}});
  h.series.push_back({fmt("after (step %lld)", (long long)step), "#2f6fb0", {}});
  for (const HeadMetrics& m : before.metrics) h.series[0].values.push_back(m.bos_mass);
  for (const HeadMetrics& m : after.metrics) h.series[1].values.push_back(m.bos_mass);
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"680\" height=\"370\" "
         "viewBox=\"0 0 680 370\" font-family=\"Helvetica, Arial, sans-serif\" "
         "font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n" +
         svg::bos_histogram(h, after.thresholds) + "</svg>\n";
}

std::string diagnoses_sections(const Run& r, const RunReportOptions& o, const Part& part) {
  std::string out = "<section id=\"heatmaps" + part.id + "\">\n<h2>" + part.title +
                    "Attention on the first token</h2>\n";
  std::string hist =
      "<section id=\"histogram" + part.id + "\">\n<h2>" + part.title + "bos_mass histogram</h2>\n";
  std::string drift = "<section id=\"drift" + part.id + "\">\n<h2>" + part.title + "Drift</h2>\n";
  if (!r.before || !r.after) {
    const std::string why =
        !r.before ? "diagnosis_before.json is missing (a run written before repair kept it)."
                  : "no diagnoses/step-N.json of an evaluation yet.";
    return out + missing("Not available: " + why) + "</section>\n" + hist +
           missing("Not available: " + why) + "</section>\n" + drift +
           missing("Not available: " + why) + "</section>\n";
  }
  DriftOptions dopt;
  dopt.threshold = o.threshold;
  dopt.targets = r.plan.targets;
  dopt.before_name = (r.dir / "diagnosis_before.json").string();
  dopt.after_name = (r.dir / "diagnoses" / fmt("step-%lld.json", (long long)r.after_step)).string();
  const Drift d = compute_drift(*r.before, *r.after, dopt);

  out += "<p>Before: the input model. After: step " + std::to_string(r.after_step) + ", " +
         xml(r.after_why) +
         ". Hover a cell for its values. T marks the targets, F the frozen heads of the surgical "
         "zone.</p>\n";
  out += "<div class=\"figure\">" +
         render_drift_svg(*r.before, *r.after, d, "report-drift" + part.id) +
         "</div>\n</section>\n";
  const Summary sb = summarize(*r.before), sa = summarize(*r.after);
  hist +=
      fmt("<p>Healthy heads: %d before, %d after (of %zu); bos-sink %d → %d, dead %d → %d, "
          "low-entropy %d → %d.</p>\n",
          sb.healthy, sa.healthy, r.before->metrics.size(), sb.bos_sink, sa.bos_sink, sb.dead,
          sa.dead, sb.low_entropy, sa.low_entropy);
  hist += "<div class=\"figure\">" + histogram_svg(*r.before, *r.after, r.after_step) +
          "</div>\n</section>\n";

  drift += "<p>δ = bos_mass after − before; a head drifts when |δ| &gt; " + fmt("%g", d.threshold) +
           ". The zone is the plan's target head indices in its target layers.</p>\n";
  auto stats_row = [](const std::string& name, const DriftStats& s) {
    return "<tr><td class=\"l\">" + name + "</td><td>" + std::to_string(s.heads) + "</td><td>" +
           std::to_string(s.drifting) + "</td><td>" + fmt("%.4f", s.mean_abs_delta) + "</td><td>" +
           (s.worst ? fmt("L%d H%d %+.4f", s.worst->layer, s.worst->head, s.worst->delta) : "–") +
           "</td></tr>\n";
  };
  const std::string head =
      "<tr><th class=\"l\">%s</th><th>heads</th><th>drifting</th><th>mean |δ|</th>"
      "<th>worst</th></tr>\n";
  drift += "<h3>Groups</h3>\n<table id=\"drift-groups" + part.id + "\">\n" +
           fmt(head.c_str(), "group") + stats_row("outside the zone", d.outside) +
           stats_row("frozen in the zone", d.frozen_in_zone) + stats_row("targets", d.targets) +
           "</table>\n";
  drift += "<h3>Per head-index column (targets left out)</h3>\n<table id=\"drift-columns" +
           part.id + "\">\n" + fmt(head.c_str(), "column");
  for (const DriftColumn& c : d.columns) drift += stats_row("H" + std::to_string(c.head), c.stats);
  drift += "</table>\n<h3>Class changes</h3>\n";
  if (d.class_changes.empty()) {
    drift += "<p>No head changed class.</p>\n";
  } else {
    drift += "<table id=\"class-changes" + part.id +
             "\">\n<tr><th>layer</th><th>head</th><th class=\"l\">from"
             "</th><th class=\"l\">to</th><th class=\"l\">group</th></tr>\n";
    for (const ClassChange& c : d.class_changes)
      drift +=
          fmt("<tr><td>%d</td><td>%d</td><td class=\"l\">%s</td><td class=\"l\">%s</td>"
              "<td class=\"l\">%s</td></tr>\n",
              c.layer, c.head, class_name(c.from), class_name(c.to), drift_group_name(c.group));
    drift += "</table>\n";
  }
  return out + hist + drift + "</section>\n";
}

std::string trajectory_section(const Run& r, const Part& part) {
  std::string o =
      "<section id=\"trajectory" + part.id + "\">\n<h2>" + part.title + "Trajectory</h2>\n";
  if (r.trajectory.empty()) return o + missing("No evaluation yet.") + "</section>\n";
  auto series = [&](const char* key, const std::string& label, const std::string& colour) {
    svg::LineSeries s{label, colour, {}, false};
    for (const json& e : r.trajectory) s.points.push_back({number(e, "step"), number(e, key)});
    return s;
  };
  svg::LineChart ppl{"Held-out perplexity", "optimizer step", "PPL", 560, 300, false, {}};
  ppl.series.push_back(series("heldout_ppl", "held-out PPL", "#2f6fb0"));
  svg::LineChart train{"Training perplexity", "optimizer step", "PPL", 560, 300, false, {}};
  train.series.push_back(series("train_ppl", "train PPL", "#c0392b"));
  svg::LineChart heads{"Heads woken", "optimizer step", "heads", 560, 300, true, {}};
  heads.series.push_back(series("heads_woken", "targets healthy", "#27864a"));
  heads.series.push_back(series("frozen_drift", "watched heads drifting", "#e08a00"));
  const double first = number(r.trajectory.front(), "step"),
               last = number(r.trajectory.back(), "step");
  const double n_targets = number(r.trajectory.back(), "targets");
  if (std::isfinite(n_targets))
    heads.series.push_back({"targets", "#777", {{first, n_targets}, {last, n_targets}}, true});
  o += "<div class=\"charts\">\n";
  for (const svg::LineChart* c : {&ppl, &train, &heads})
    o += "<div class=\"figure\">" + svg::line_chart(*c) + "</div>\n";
  o += "</div>\n<table id=\"evaluations" + part.id +
       "\">\n<tr><th>step</th><th>epoch</th><th>tokens</th>"
       "<th>train loss</th><th>train PPL</th><th>held-out PPL</th><th>woken</th>"
       "<th>watched drifting</th><th>seconds</th></tr>\n";
  for (size_t i = 0; i < r.trajectory.size(); ++i) {
    const json& e = r.trajectory[i];
    o += std::string(int(i) == r.best ? "<tr class=\"best\">" : "<tr>");
    for (const auto& [key, f] :
         {std::pair{"step", "%.0f"}, std::pair{"epoch", "%.0f"}, std::pair{"tokens", "%.0f"},
          std::pair{"train_loss", "%.4f"}, std::pair{"train_ppl", "%.4f"},
          std::pair{"heldout_ppl", "%.4f"}, std::pair{"heads_woken", "%.0f"},
          std::pair{"frozen_drift", "%.0f"}, std::pair{"seconds", "%.1f"}})
      o += "<td>" + xml(cell(number(e, key), f)) + "</td>";
    o += "</tr>\n";
  }
  return o + "</table>\n<p>The highlighted row is the best held-out perplexity.</p>\n</section>\n";
}

std::string generations_section(const Run& r, const Part& part) {
  std::string o = "<section id=\"generations" + part.id + "\">\n<h2>" + part.title +
                  "Sample generations</h2>\n";
  if (r.trajectory.empty()) return o + missing("No evaluation yet.") + "</section>\n";
  o += "<p>Greedy continuations at each evaluation (the prompt in bold).</p>\n";
  o += "<table id=\"generation-table" + part.id +
       "\">\n<tr><th>step</th><th class=\"l\">text</th></tr>\n";
  for (const json& e : r.trajectory) {
    const auto it = e.find("generations");
    if (it == e.end() || !it->is_array()) continue;
    for (const json& g : *it) {
      if (!g.is_object()) continue;
      const std::string prompt = str(g, "prompt"), text = str(g, "text");
      // Decoded text starts with the prompt; show what the model added apart from it.
      const bool prefixed = !prompt.empty() && text.starts_with(prompt);
      o += "<tr><td>" + xml(cell(number(e, "step"), "%.0f")) + "</td><td class=\"gen\">" +
           (prefixed ? "<b>" + xml(prompt, true) + "</b>" + xml(text.substr(prompt.size()), true)
                     : xml(text, true)) +
           "</td></tr>\n";
    }
  }
  return o + "</table>\n</section>\n";
}

// The stages of several passes side by side, one bos_mass heatmap each (class letters as in
// `diagnose`), on one colour scale.
std::string stages_svg(const std::vector<std::pair<std::string, const Diagnosis*>>& stages) {
  using namespace svg;
  const Diagnosis& first = *stages.front().second;
  const int L = first.layers, H = first.heads;
  const double cell = heatmap_cell(L, H, 320, 480);
  const double hw = cell * H, hh = cell * L, hy = 60, gap = 60;
  const double bar = 70 + double(stages.size()) * (hw + gap) - gap + 20;
  const double barh = std::clamp(hh, 140.0, 320.0);
  const double width = bar + 14 + 60, height = hy + std::max(hh, barh) + 50;
  std::string o = "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" +
                  num(width) + "\" height=\"" + num(height) + "\" viewBox=\"0 0 " + num(width) +
                  " " + num(height) +
                  "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\">\n" +
                  "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n";
  for (size_t k = 0; k < stages.size(); ++k) {
    const Diagnosis& g = *stages[k].second;
    o += "<g class=\"stage\">\n";
    o += heatmap({70 + double(k) * (hw + gap), hy, cell, L, H,
                  fmt("%s: %d/%d healthy", stages[k].first.c_str(), summarize(g).healthy, L * H)},
                 [&](int l, int h) {
                   const HeadClass c = g.class_of(l, h);
                   return HeatmapCell{
                       viridis(g.at(l, h).bos_mass),
                       fmt("L%d H%d bos %.3f %s", l, h, g.at(l, h).bos_mass, class_name(c)),
                       is_sick(c) ? std::string(1, class_letter(c)) : ""};
                 });
    o += "</g>\n";
  }
  ColourBar b{"report-stages-bos", "bos_mass", bar, hy, 14, barh, viridis_stops(), {}, {}};
  for (int i = 0; i <= 4; ++i) b.ticks.push_back({i / 4.0, fmt("%.2f", i / 4.0)});
  o += colour_bar(b);
  o += text(10, hy + std::max(hh, barh) + 34,
            "letters: S = BOS-sink, D = DEAD, E = low-entropy, none = healthy");
  return o + "</svg>\n";
}

// The overview of several passes: each run's model, targets and outcome, then the heads before
// pass 1 and after each pass.
std::string passes_sections(const std::vector<Run>& runs) {
  std::string o =
      "<section id=\"passes\">\n<h2>Passes</h2>\n<table id=\"pass-table\">\n<tr><th>pass</th>"
      "<th class=\"l\">run directory</th><th class=\"l\">model repaired</th><th>targets</th>"
      "<th>woken at best</th><th>healthy before</th><th>healthy after</th>"
      "<th>best held-out PPL</th></tr>\n";
  auto healthy = [](const std::optional<Diagnosis>& d) {
    return d ? std::to_string(summarize(*d).healthy) : std::string("–");
  };
  std::string notes;
  const Diagnosis* shape = nullptr;  // one heatmap scale for all stages needs one architecture
  for (size_t k = 0; k < runs.size(); ++k) {
    const Run& r = runs[k];
    for (const std::optional<Diagnosis>* d : {&r.before, &r.after}) {
      if (!*d) continue;
      if (!shape) shape = &**d;
      if ((*d)->layers != shape->layers || (*d)->heads != shape->heads)
        throw Error(r.dir.string(), fmt("its diagnoses have %d layers x %d heads, the runs before "
                                        "%d x %d: not a pass of the same model",
                                        (*d)->layers, (*d)->heads, shape->layers, shape->heads));
    }
    const json* best = r.best >= 0 ? &r.trajectory[size_t(r.best)] : nullptr;
    o += fmt("<tr><td>%zu</td>", k + 1) + "<td class=\"l\">" + xml(r.dir.string()) +
         "</td><td class=\"l\">" + xml(str(r.config, "model")) + "</td><td>" +
         std::to_string(r.plan.target_list().size()) + "</td><td>" +
         (best ? xml(cell(number(*best, "heads_woken"), "%.0f")) : "–") + "</td><td>" +
         healthy(r.before) + "</td><td>" + healthy(r.after) + "</td><td>" +
         (best ? xml(cell(number(*best, "heldout_ppl"), "%.4f")) : "–") + "</td></tr>\n";
    // A pass repairs a checkpoint of the pass before; anything else is worth a word.
    if (k == 0) continue;
    const std::string plan = run_plan_of_checkpoint(str(r.config, "model"));
    std::error_code ec;
    if (plan.empty() || !fs::equivalent(fs::path(plan).parent_path(), runs[k - 1].dir, ec))
      notes += missing(fmt("Pass %zu repaired ", k + 1) + str(r.config, "model") +
                       fmt(", which is not a checkpoint of the run of pass %zu (", k) +
                       runs[k - 1].dir.string() + "): the passes are shown in the order given.");
  }
  o += "</table>\n" + notes + "</section>\n";

  o += "<section id=\"stages\">\n<h2>The heads, pass by pass</h2>\n";
  std::vector<std::pair<std::string, const Diagnosis*>> stages;
  if (runs.front().before) stages.push_back({"before pass 1", &*runs.front().before});
  for (size_t k = 0; k < runs.size(); ++k)
    if (runs[k].after) stages.push_back({fmt("after pass %zu", k + 1), &*runs[k].after});
  if (stages.size() < runs.size() + 1)
    o += missing(
        "Some stages have no diagnosis (a run without diagnosis_before.json or without an "
        "evaluation yet): only the others are drawn.");
  o += "<p>bos_mass of every head: before pass 1 (its input model) and after each pass (the "
       "diagnosis of the step each pass's section calls \"after\"). Hover a cell for its "
       "values.</p>\n";
  if (!stages.empty()) o += "<div class=\"figure\">" + stages_svg(stages) + "</div>\n";
  return o + "</section>\n";
}

}  // namespace

std::string render_run_report(const std::vector<std::string>& run_dirs, const RunReportOptions& o) {
  if (!(o.threshold >= 0)) throw Error("--threshold", "must be a non-negative number");
  if (run_dirs.empty()) throw Error("report", "no run directory");
  std::vector<Run> runs;
  for (const std::string& d : run_dirs) runs.push_back(load(d));
  const Run& r0 = runs.front();
  const bool several = runs.size() > 1;
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<title>headsurgeon report: " + xml(str(r0.config, "model")) + "</title>\n";
  h += "<style>" + std::string(kCss) + "</style>\n</head>\n<body>\n";
  if (several) {
    h += fmt("<h1>headsurgeon repair report: %zu passes</h1>\n<p>", runs.size()) +
         xml(str(r0.config, "model"));
    for (const Run& r : runs) h += " → " + xml(r.dir.string());
    h += "</p>\n" + passes_sections(runs);
  } else {
    h += "<h1>headsurgeon repair report</h1>\n<p>" + xml(str(r0.config, "model")) + " — " +
         xml(r0.dir.string()) + "</p>\n";
  }
  for (size_t k = 0; k < runs.size(); ++k) {
    const Part part = several ? Part{fmt("-pass%zu", k + 1), fmt("Pass %zu: ", k + 1)} : Part{};
    h += summary_section(runs[k], part);
    h += diagnoses_sections(runs[k], o, part);
    h += trajectory_section(runs[k], part);
    h += generations_section(runs[k], part);
  }
  return h + "</body>\n</html>\n";
}

}  // namespace hs
