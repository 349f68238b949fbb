#include "demo/demo.h"

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

  // The paper's pass 1: the sick heads of the detected band.
  Plan plan = make_plan(d0, PlanOptions{});
  const auto targets = plan.target_list();
  r.targets = int(targets.size());
  write_file_atomic((out / "plan.json").string(), plan.to_json().dump(1) + "\n");

  auto arm = [&](bool reinit, const std::string& name) {
    const auto ta = std::chrono::steady_clock::now();
    const fs::path run = out / name;
    fs::remove_all(run);  // a demo starts over; real runs use --resume instead
    RepairOptions ro;
    ro.model = o.model;
    ro.plan = (out / "plan.json").string();
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
    if (run_repair(ro) != 0) throw Interrupted();  // it has said where its state is
    const Measured after = measure((run / "best").string(), heldout, name, bos);
    DemoArm a;
    for (const HeadRef& t : targets)
      a.recovered += after.diagnosis.class_of(t.layer, t.head) == HeadClass::Healthy;
    a.healthy_after = summarize(after.diagnosis).healthy;
    a.ppl_after = after.ppl;
    a.seconds = seconds_since(ta);
    write_file_atomic((out / ("diagnosis_" + name + ".json")).string(),
                      to_json(after.diagnosis).dump(1) + "\n");
    write_file_atomic((out / (name + ".svg")).string(), render_svg(after.diagnosis));
    return a;
  };
  r.surgery = arm(true, "surgery");
  if (o.control) {
    r.has_control = true;
    r.control = arm(false, "control");
  }
  r.seconds = seconds_since(t0);
  return r;
}

nlohmann::json DemoResult::to_json() const {
  nlohmann::json j = {{"model", model},
                      {"heads", heads},
                      {"targets", targets},
                      {"recovered", surgery.recovered},
                      {"healthy_before", healthy_before},
                      {"healthy_after", surgery.healthy_after},
                      {"ppl_before", ppl_before},
                      {"ppl_after", surgery.ppl_after},
                      {"seconds", seconds},
                      {"out_dir", out_dir}};
  if (has_control)
    j["control"] = {{"recovered", control.recovered},
                    {"healthy_after", control.healthy_after},
                    {"ppl_after", control.ppl_after},
                    {"seconds", control.seconds}};
  return j;
}

std::string DemoResult::render_table() const {
  char buf[256];
  std::string s;
  auto row = [&](const char* name, const std::string& b, const std::string& a,
                 const std::string& c) {
    std::snprintf(buf, sizeof buf, "%-22s %12s %14s %s\n", name, b.c_str(), a.c_str(),
                  has_control ? c.c_str() : "");
    s += buf;
  };
  auto frac = [](int n, int of) { return std::to_string(n) + "/" + std::to_string(of); };
  auto num = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f", v);
    return std::string(b);
  };
  row("", "before", "after surgery", "control (no reinit)");
  row("healthy heads", frac(healthy_before, heads), frac(surgery.healthy_after, heads),
      frac(control.healthy_after, heads));
  row("targets recovered", "-", frac(surgery.recovered, targets), frac(control.recovered, targets));
  row("held-out PPL", num(ppl_before), num(surgery.ppl_after), num(control.ppl_after));
  row("seconds", "", num(surgery.seconds), num(control.seconds));
  return s;
}

}  // namespace hs
