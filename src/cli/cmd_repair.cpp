// headsurgeon repair MODEL --plan plan.json --corpus PATH -o RUN_DIR
#include <cmath>

#include "cli/common.h"
#include "cli/model_loading.h"
#include "surgery/repair.h"
#include "util/error.h"

namespace hs::cli {

namespace {

// "N" steps or "Nm" minutes.
void parse_save_every(const std::string& s, RepairOptions& o) {
  const bool minutes = !s.empty() && s.back() == 'm';
  const std::string num = minutes ? s.substr(0, s.size() - 1) : s;
  size_t used = 0;
  double v = -1;
  try {
    v = std::stod(num, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (num.empty() || used != num.size() || !(v >= 0) || (!minutes && v != std::floor(v)))
    throw Error("--save-every", "expected N steps or Nm minutes, got '" + s + "'");
  o.save_every_steps = minutes ? 0 : int64_t(v);
  o.save_every_minutes = minutes ? v : 0;
}

}  // namespace

void add_repair(CLI::App& app) {
  auto o = std::make_shared<RepairOptions>();
  auto init = std::make_shared<std::string>("xavier-normal");
  auto no_reinit = std::make_shared<bool>(false);
  auto dev = std::make_shared<DeviceArgs>();
  CLI::App* sub = app.add_subcommand(
      "repair",
      "Surgical repair (the paper's method): re-initialise the plan's target heads (Q/K/V rows "
      "Xavier, qkv bias and dense input columns zeroed) and train only those slices, "
      "everything else frozen. Evaluates every --eval-every epochs (diagnosis, heads woken, "
      "drift of watched heads, train/held-out PPL, generations), keeps HF checkpoints, stops "
      "early. Ctrl-C saves a resumable state; --resume continues bit for bit.");
  sub->add_option(
         "MODEL", o->model,
         "checkpoint directory, or hub id org/name[@revision] (downloaded when not cached)")
      ->required();
  sub->add_option("--plan", o->plan, "plan JSON (headsurgeon plan, or written by hand)")
      ->required();
  add_corpus_options(sub, o->corpus, o->text_field, o->max_tokens, "use only");
  sub->add_option("-o,--out", o->out_dir, "run directory")->required();
  sub->add_option("--epochs", o->epochs, "epochs over the corpus")->capture_default_str();
  sub->add_option("--lr", o->lr, "AdamW learning rate")->capture_default_str();
  sub->add_option("--accum", o->accum, "sequences per optimizer step (gradient accumulation)")
      ->capture_default_str();
  sub->add_option("--seq", o->seq, "tokens per training sequence")->capture_default_str();
  sub->add_option("--warmup", o->warmup, "warm-up steps (-1: min(100, total/4))")
      ->capture_default_str();
  sub->add_option("--clip", o->clip, "clip the global gradient norm at this value")
      ->capture_default_str();
  sub->add_option("--eval-every", o->eval_every, "evaluate and checkpoint every N epochs")
      ->capture_default_str();
  sub->add_option("--eval-steps", o->eval_steps, "also every N optimizer steps (0: off)")
      ->capture_default_str();
  sub->add_option("--patience", o->patience,
                  "stop when held-out PPL has not improved for this many evaluations")
      ->capture_default_str();
  sub->add_option("--seed", o->seed, "seed of re-initialisation and shuffling")
      ->capture_default_str();
  sub->add_option("--init", *init, "xavier-normal (the paper) or xavier-uniform (its code)")
      ->check(CLI::IsMember({"xavier-normal", "xavier-uniform"}))
      ->capture_default_str();
  sub->add_flag("--no-reinit", *no_reinit,
                "gradient-only control: same masks, no re-initialisation");
  sub->add_option("--heldout", o->heldout,
                  "held-out prompts, one per line (default: the paper's 12 prompts)");
  sub->add_flag("--resume", o->resume,
                "continue the run in RUN_DIR from its saved state (from the beginning if it has "
                "none yet)");
  auto save_every = std::make_shared<std::string>("5m");
  sub->add_option("--save-every", *save_every,
                  "also save the resumable state every N steps, or every N minutes with Nm "
                  "(0: only at evaluations and on Ctrl-C)")
      ->capture_default_str();
  sub->add_option("--gen-tokens", o->gen_tokens, "tokens per sample generation at evaluations")
      ->capture_default_str();
  sub->add_flag("-q,--quiet", o->quiet, "no progress lines");
  add_device_options(sub, *dev);
  sub->add_option("--interrupt-after-steps", o->interrupt_after_steps,
                  "testing: act as if Ctrl-C arrived after this step")
      ->group("");
  sub->callback(interruptible([o, init, no_reinit, dev, save_every] {
    parse_save_every(*save_every, *o);
    o->device = dev->device;
    o->gpu_dtype = dev->gpu_dtype;
    o->device_from = dev->device_from;
    o->init = *init == "xavier-uniform" ? InitKind::XavierUniform : InitKind::XavierNormal;
    o->reinit = !*no_reinit;
    fetch_model(o->model);
    const int rc = run_repair(*o);
    if (rc != 0) throw ExitCode{rc};
  }));
}

}  // namespace hs::cli
