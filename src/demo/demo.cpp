#include "demo/demo.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "diagnose/run.h"
#include "engine/cpu/weights.h"
#include "eval/perplexity.h"
#include "surgery/plan.h"
#include "surgery/repair.h"
#include "text/tokenizer.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/files.h"
#include "util/interrupt.h"

namespace hs {

namespace fs = std::filesystem;

namespace {

std::vector<std::vector<int32_t>> heldout_ids(const std::string& path, const Tokenizer& tok) {
  std::vector<std::vector<int32_t>> ids;
  for (const std::string& line : read_nonblank_lines(path)) ids.push_back(tok.encode(line));
  if (ids.empty()) throw Error(path, "no held-out text (one prompt per line)");
  return ids;
}

struct Measured {
  Diagnosis diagnosis;
  double ppl;
};

// Diagnosis and held-out PPL of a checkpoint; with bos, <s> starts the prompt and every
// held-out line, as in the model's pretraining.
Measured measure(const std::string& dir, const std::string& heldout, const std::string& name,
                 bool bos) {
  Model m(dir, ModelOptions{});
  const Tokenizer tok = Tokenizer::from_file(m.checkpoint().tokenizer_path());
  DiagnoseOptions dopt;
  dopt.bos = bos;
  Measured r{diagnose(m, tok, dopt, name), 0};
  auto ids = heldout_ids(heldout, tok);
  if (bos)
    for (auto& s : ids) s.insert(s.begin(), int32_t(m.config().bos_id));
  r.ppl = perplexity(m, ids, 1 << 20).ppl;
  return r;
}

// A model pretrained with <s> first (recipe.json "bos": true, see `pretrain --bos`) is
// diagnosed with it, since that is where its sinks are.
bool trained_with_bos(const fs::path& model) {
  const fs::path recipe = model / "recipe.json";
  if (!fs::exists(recipe)) return false;
  const nlohmann::json j = read_json_file(recipe.string());
  return j.value("bos", false);
}

}  // namespace

DemoResult run_demo(const DemoOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path out(o.out_dir), model(o.model);
  const std::string corpus = o.corpus.empty() ? (model / "corpus").string() : o.corpus;
  const std::string heldout = o.heldout.empty() ? (model / "heldout.txt").string() : o.heldout;
  fs::create_directories(out);

  const bool bos = trained_with_bos(model);
  DemoResult r;
  r.model = o.model;
  r.out_dir = o.out_dir;
  const Measured before = measure(o.model, heldout, o.model, bos);
  const Diagnosis& d0 = before.diagnosis;
  r.heads = d0.layers * d0.heads;
  r.healthy_before = summarize(d0).healthy;
  r.ppl_before = before.ppl;
  write_file_atomic((out / "diagnosis_before.json").string(), to_json(d0).dump(1) + "\n");
  write_file_atomic((out / "before.svg").string(), render_svg(d0));
  if (!o.quiet) std::fprintf(stderr, "%s", render_table(d0).c_str());

  // The paper's pass 1: the sick heads of the detected band (make_plan throws without one).
  const Plan plan = make_plan(d0, PlanOptions{});
  r.band = *plan.band;

  // One repair of `from` by `p` (written to OUT/plan_file), its best checkpoint diagnosed (named
  // by its path, so that `plan --pass 2` finds the run's plan from the saved diagnosis) and
  // measured.
  auto arm = [&](const std::string& from, const Plan& p, const std::string& plan_file, bool reinit,
                 const std::string& name) {
    const auto ta = std::chrono::steady_clock::now();
    const fs::path run = out / name;
    fs::remove_all(run);  // a demo starts over; real runs use --resume instead
    write_file_atomic((out / plan_file).string(), p.to_json().dump(1) + "\n");
    RepairOptions ro;
    ro.model = from;
    ro.plan = (out / plan_file).string();
    ro.out_dir = run.string();
    ro.corpus = {corpus};
    ro.heldout = heldout;
    ro.epochs = o.epochs;
    ro.eval_every = 1;
    ro.patience = o.epochs;
    ro.seq = o.seq;
    ro.accum = o.accum;
    ro.lr = o.lr;
    ro.seed = o.seed;
    ro.reinit = reinit;
    ro.quiet = o.quiet;
    ro.device = o.device;
    ro.gpu_dtype = o.gpu_dtype;
    ro.device_from = o.device_from;
    if (run_repair(ro) != 0) throw Interrupted();  // it has said where its state is
    const std::string best = (run / "best").string();
    Measured after = measure(best, heldout, best, bos);
    DemoArm a;
    for (const HeadRef& t : p.target_list()) {
      ++a.targets;
      a.recovered += after.diagnosis.class_of(t.layer, t.head) == HeadClass::Healthy;
    }
    a.healthy_after = summarize(after.diagnosis).healthy;
    a.ppl_after = after.ppl;
    a.seconds = seconds_since(ta);
    write_file_atomic((out / ("diagnosis_" + name + ".json")).string(),
                      to_json(after.diagnosis).dump(1) + "\n");
    write_file_atomic((out / (name + ".svg")).string(), render_svg(after.diagnosis));
    return std::pair{a, std::move(after.diagnosis)};
  };
  const auto [pass1, d1] = arm(o.model, plan, "plan.json", true, "surgery");
  r.surgery = pass1;
  if (o.control) {
    r.has_control = true;
    r.control = arm(o.model, plan, "plan.json", false, "control").first;
  }
  if (o.passes == 2) {
    r.has_pass2 = true;
    int outside = 0;
    for (int l = 0; l < d1.layers; ++l)
      for (int h = 0; h < d1.heads; ++h)
        outside += is_sick(d1.class_of(l, h)) && (h < r.band.first || h > r.band.second);
    if (outside == 0) {
      r.pass2.healthy_after = r.surgery.healthy_after;  // nothing to do: pass 1's model stands
      r.pass2.ppl_after = r.surgery.ppl_after;
    } else {
      // Pass 1 healed the band, so the band comes from its plan, as `plan --pass 2` takes it.
      PlanOptions p2;
      p2.mode = PlanOptions::Mode::Pass2;
      p2.pass1_band = plan.band;
      p2.pass1_plan = (out / "surgery" / "plan.json").string();
      r.pass2 = arm((out / "surgery" / "best").string(), make_plan(d1, p2), "plan_pass2.json", true,
                    "pass2")
                    .first;
    }
  }
  r.seconds = seconds_since(t0);
  return r;
}

nlohmann::json DemoResult::to_json() const {
  auto arm = [](const DemoArm& a) {
    return nlohmann::json{{"targets", a.targets},
                          {"recovered", a.recovered},
                          {"healthy_after", a.healthy_after},
                          {"ppl_after", a.ppl_after},
                          {"seconds", a.seconds}};
  };
  nlohmann::json j = {{"model", model},
                      {"heads", heads},
                      {"band", {band.first, band.second}},
                      {"targets", surgery.targets},
                      {"recovered", surgery.recovered},
                      {"healthy_before", healthy_before},
                      {"healthy_after", surgery.healthy_after},
                      {"ppl_before", ppl_before},
                      {"ppl_after", surgery.ppl_after},
                      {"seconds", seconds},
                      {"out_dir", out_dir}};
  if (has_control) j["control"] = arm(control);
  if (has_pass2) j["pass2"] = arm(pass2);
  return j;
}

std::string DemoResult::render_table() const {
  auto frac = [](int n, int of) { return std::to_string(n) + "/" + std::to_string(of); };
  auto num = [](const char* f, double v) {
    char b[32];
    std::snprintf(b, sizeof b, f, v);
    return std::string(b);
  };
  const std::vector<std::string> rows = {
      "", "healthy heads", "targets", "targets woken", "held-out PPL", "seconds"};
  // One column per stage: its header, then a cell per row.
  std::vector<std::vector<std::string>> cols = {
      {"before", frac(healthy_before, heads), "-", "-", num("%.2f", ppl_before), ""}};
  auto stage = [&](const std::string& head, const DemoArm& a, const std::string& targets) {
    cols.push_back({head, frac(a.healthy_after, heads), targets,
                    a.targets ? frac(a.recovered, a.targets) : "-", num("%.2f", a.ppl_after),
                    a.targets ? num("%.1f", a.seconds) : ""});
  };
  const std::string n1 = std::to_string(surgery.targets);
  stage("after pass 1", surgery,
        n1 + " in H" + std::to_string(band.first) + "-H" + std::to_string(band.second));
  if (has_control) stage("control (no reinit)", control, "the same " + n1);
  if (has_pass2)
    stage("after pass 2", pass2,
          pass2.targets ? std::to_string(pass2.targets) + " outside" : "none outside");
  std::string s;
  for (size_t i = 0; i < rows.size(); ++i) {
    std::string line = rows[i] + std::string(16 - rows[i].size(), ' ');
    for (const auto& c : cols) {
      size_t w = 0;
      for (const auto& cell : c) w = std::max(w, cell.size());
      line += std::string(w + 2 - c[i].size(), ' ') + c[i];
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    s += line + "\n";
  }
  return s;
}

}  // namespace hs
