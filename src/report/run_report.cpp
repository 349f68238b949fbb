#include "report/run_report.h"

#include <climits>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

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

std::string summary_section(const Run& r) {
  const json& c = r.config;
  size_t targets = 0, watched = 0;
  for (const auto& [l, hs] : r.plan.targets) targets += hs.size();
  for (const auto& [l, hs] : r.plan.frozen_watch) watched += hs.size();
  std::string o = "<section id=\"summary\">\n<h2>Run summary</h2>\n<table class=\"kv\">\n";
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

std::string diagnoses_sections(const Run& r, const RunReportOptions& o) {
  std::string out = "<section id=\"heatmaps\">\n<h2>Attention on the first token</h2>\n";
  std::string hist = "<section id=\"histogram\">\n<h2>bos_mass histogram</h2>\n";
  std::string drift = "<section id=\"drift\">\n<h2>Drift</h2>\n";
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
  out += "<div class=\"figure\">" + render_drift_svg(*r.before, *r.after, d, "report-drift") +
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
  drift += "<h3>Groups</h3>\n<table id=\"drift-groups\">\n" + fmt(head.c_str(), "group") +
           stats_row("outside the zone", d.outside) +
           stats_row("frozen in the zone", d.frozen_in_zone) + stats_row("targets", d.targets) +
           "</table>\n";
  drift += "<h3>Per head-index column (targets left out)</h3>\n<table id=\"drift-columns\">\n" +
           fmt(head.c_str(), "column");
  for (const DriftColumn& c : d.columns) drift += stats_row("H" + std::to_string(c.head), c.stats);
  drift += "</table>\n<h3>Class changes</h3>\n";
  if (d.class_changes.empty()) {
    drift += "<p>No head changed class.</p>\n";
  } else {
    drift +=
        "<table id=\"class-changes\">\n<tr><th>layer</th><th>head</th><th class=\"l\">from"
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

std::string trajectory_section(const Run& r) {
  std::string o = "<section id=\"trajectory\">\n<h2>Trajectory</h2>\n";
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
  o += "</div>\n<table id=\"evaluations\">\n<tr><th>step</th><th>epoch</th><th>tokens</th>"
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

std::string generations_section(const Run& r) {
  std::string o = "<section id=\"generations\">\n<h2>Sample generations</h2>\n";
  if (r.trajectory.empty()) return o + missing("No evaluation yet.") + "</section>\n";
  o += "<p>Greedy continuations at each evaluation (the prompt in bold).</p>\n";
  o += "<table id=\"generation-table\">\n<tr><th>step</th><th class=\"l\">text</th></tr>\n";
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

}  // namespace

std::string render_run_report(const std::string& run_dir, const RunReportOptions& o) {
  if (!(o.threshold >= 0)) throw Error("--threshold", "must be a non-negative number");
  const Run r = load(run_dir);
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<title>headsurgeon report: " + xml(str(r.config, "model")) + "</title>\n";
  h += "<style>" + std::string(kCss) + "</style>\n</head>\n<body>\n";
  h += "<h1>headsurgeon repair report</h1>\n<p>" + xml(str(r.config, "model")) + " — " +
       xml(r.dir.string()) + "</p>\n";
  h += summary_section(r);
  h += diagnoses_sections(r, o);
  h += trajectory_section(r);
  h += generations_section(r);
  return h + "</body>\n</html>\n";
}

}  // namespace hs
