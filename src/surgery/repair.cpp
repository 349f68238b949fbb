#include "surgery/repair.h"

#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "backend/backend.h"
#include "diagnose/run.h"
#include "eval/generate.h"
#include "eval/heldout.h"
#include "eval/perplexity.h"
#include "io/safetensors.h"
#include "surgery/plan.h"
#include "surgery/schedule.h"
#include "text/corpus.h"
#include "text/token_cache.h"
#include "text/tokenizer.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/files.h"
#include "util/interrupt.h"

namespace hs {

namespace fs = std::filesystem;

namespace {

// Resumable state: the trainable slices (fp32 masters), Adam moments, counters. Written to a
// fresh folder, then swapped in (write_dir_atomic), so a crash (or a third Ctrl-C) mid-write
// leaves the previous state intact.
void save_state(const fs::path& run, const TargetSlices& slices, const AdamState& adam,
                const RunState& st, const nlohmann::json& options) {
  const SavingState saving;  // a second Ctrl-C now says the save is being finished
  write_dir_atomic((run / "state").string(), [&](const std::string& tmp) {
    std::vector<TensorToWrite> ts;
    const auto bufs = slices.buffers();
    for (size_t k = 0; k < bufs.size(); ++k) {
      const int64_t n = int64_t(bufs[k]->size());
      ts.push_back({"slice." + std::to_string(k), DType::F32, {n}, bufs[k]->data(), size_t(n) * 4});
      ts.push_back(
          {"adam_m." + std::to_string(k), DType::F32, {n}, adam.m[k].data(), size_t(n) * 4});
      ts.push_back(
          {"adam_v." + std::to_string(k), DType::F32, {n}, adam.v[k].data(), size_t(n) * 4});
    }
    write_safetensors(tmp + "/state.safetensors", ts);
    const nlohmann::json j = {{"step", st.step},
                              {"adam_steps", adam.steps},
                              {"best_ppl", std::isfinite(st.best_ppl) ? nlohmann::json(st.best_ppl)
                                                                      : nlohmann::json(nullptr)},
                              {"best_step", st.best_step},
                              {"evals_since_best", st.evals_since_best},
                              {"loss_sum", st.loss_sum},
                              {"loss_count", st.loss_count},
                              {"trajectory", st.trajectory},
                              {"eval_pending", st.eval_pending},
                              {"options", options}};
    write_file_atomic(tmp + "/state.json", j.dump(1) + "\n");
  });
}

const char* kGenPrompts[] = {"The meaning of", "def main():"};

}  // namespace

void read_run_state(const std::string& run_dir, TargetSlices& slices, AdamState& adam, RunState& st,
                    const nlohmann::json& options) {
  const fs::path run(run_dir);
  const fs::path jp = run / "state" / "state.json";
  const nlohmann::json j = read_json_file(jp.string());
  // A damaged or hand-edited state.json must give one line naming the key: reading it with
  // operator[] and implicit conversions failed an assertion on a missing key, threw the JSON
  // library's errors on wrong types and cast 1e300 to int (found by fuzz_state).
  const auto opt_it = j.is_object() ? j.find("options") : j.end();
  if (opt_it == j.end() || !opt_it->is_object())
    throw Error(jp.string(), "not a run state (no \"options\" object)");
  const nlohmann::json& was = *opt_it;
  auto was_option = [&](const char* k) {
    const auto it = was.find(k);
    return it == was.end() ? nlohmann::json() : *it;
  };
  // Resuming with other settings would not continue the same run.
  for (const char* k : {"lr", "accum", "seq", "epochs", "warmup", "clip", "seed", "reinit", "init",
                        "eval_every", "eval_steps", "patience"})
    if (was_option(k) != options[k])
      throw Error(jp.string(), std::string("option --") + k + " was " + was_option(k).dump() +
                                   " in this run, now " + options[k].dump() +
                                   ": resume with the same settings");
  // Bit for bit on the same device only (runs recorded before the device was, ran on the CPU).
  const nlohmann::json device = was.contains("device") ? was_option("device") : "cpu";
  if (device != options["device"])
    throw Error(jp.string(), "this run trained on " +
                                 (device.is_string() ? device.get<std::string>() : device.dump()) +
                                 ", now on " + options["device"].get<std::string>() +
                                 ": resume with the same --device");
  auto integer = [&](const char* k, int64_t lo, int64_t hi) {
    const auto it = j.find(k);
    if (it == j.end() || !it->is_number_integer() ||
        (it->is_number_unsigned() ? it->get<uint64_t>() > uint64_t(hi)
                                  : it->get<int64_t>() < lo || it->get<int64_t>() > hi))
      throw Error(jp.string(), std::string("\"") + k + "\" must be an integer in [" +
                                   std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return it->get<int64_t>();
  };
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  RunState read;
  read.step = integer("step", 0, kMax);
  const int64_t adam_steps = integer("adam_steps", 0, kMax);
  read.best_step = integer("best_step", -1, kMax);
  read.evals_since_best = int(integer("evals_since_best", 0, std::numeric_limits<int>::max()));
  read.loss_count = integer("loss_count", 0, kMax);
  const auto field = [&](const char* k) -> const nlohmann::json& {
    const auto it = j.find(k);
    if (it == j.end()) throw Error(jp.string(), std::string("missing \"") + k + "\"");
    return *it;
  };
  if (!field("loss_sum").is_number()) throw Error(jp.string(), "\"loss_sum\" must be a number");
  read.loss_sum = field("loss_sum").get<double>();
  const nlohmann::json& best = field("best_ppl");
  if (!best.is_null() && !best.is_number())
    throw Error(jp.string(), "\"best_ppl\" must be a number or null");
  read.best_ppl = best.is_null() ? INFINITY : best.get<double>();
  if (!field("trajectory").is_array())
    throw Error(jp.string(), "\"trajectory\" must be an array of evaluations");
  read.trajectory = field("trajectory");
  const auto pending = j.find("eval_pending");
  if (pending != j.end() && !pending->is_boolean())
    throw Error(jp.string(), "\"eval_pending\" must be true or false");
  read.eval_pending = pending != j.end() && pending->get<bool>();
  SafetensorsFile f((run / "state" / "state.safetensors").string());
  auto bufs = slices.buffers();
  auto read_into = [&](const std::string& name, std::vector<float>& dst) {
    const TensorView* t = f.find(name);
    if (!t || t->dtype != DType::F32 || size_t(t->numel()) != dst.size())
      throw Error(f.path(), "tensor '" + name + "' missing or of the wrong size for this plan");
    std::memcpy(dst.data(), t->data, dst.size() * 4);
  };
  for (size_t k = 0; k < bufs.size(); ++k) {
    read_into("slice." + std::to_string(k), *bufs[k]);
    read_into("adam_m." + std::to_string(k), adam.m[k]);
    read_into("adam_v." + std::to_string(k), adam.v[k]);
  }
  st = std::move(read);
  adam.steps = adam_steps;
}

int run_repair(const RepairOptions& o) {
  const auto t_start = std::chrono::steady_clock::now();
  if (o.seq < 2) throw Error("--seq", "must be at least 2");
  if (o.accum < 1 || o.epochs < 1) throw Error("--accum/--epochs", "must be at least 1");
  if (!(o.lr > 0) || !(o.clip > 0)) throw Error("--lr/--clip", "must be positive");
  if (o.eval_every < 1) throw Error("--eval-every", "must be at least 1 epoch");

  // On the CPU the weights are converted once, straight into the surgery's training copy; on a
  // GPU they go to the device.
  const DeviceKind device = resolve_device(o.device, o.device_from);
  Model model(o.model, ModelOptions{0});
  const ModelConfig& c = model.config();
  const Tokenizer tok = Tokenizer::from_file(model.checkpoint().tokenizer_path());
  const nlohmann::json plan_json = read_json_file(o.plan);
  const Plan plan = Plan::from_json(plan_json, o.plan, int(c.n_layer), int(c.n_head));
  const auto targets = plan.target_list();
  const fs::path run(o.out_dir);
  if (!o.resume && fs::exists(run / "state"))
    throw Error(o.out_dir, "already holds a run: use --resume to continue it, or another -o");
  // What a killed run left half-written goes; a folder moved aside mid-replace comes back.
  if (fs::exists(run)) {
    const int n = recover_interrupted_writes(o.out_dir);
    if (n > 0 && !o.quiet)
      std::fprintf(stderr, "repair: cleared %d unfinished write%s of an earlier process\n", n,
                   n == 1 ? "" : "s");
  }
  // A run killed before its first saved state has nothing to resume: it starts over, as the
  // same run (the initialisation and the data order are functions of the seed).
  const bool resume = o.resume && fs::exists(run / "state" / "state.json");
  if (o.resume && !resume && !o.quiet)
    std::fprintf(stderr, "repair: no saved state in %s yet: starting from the beginning\n",
                 o.out_dir.c_str());

  // The corpus is tokenized once, into the run directory; --resume maps those tokens, so the
  // run goes on over the very stream it started with.
  const CorpusOptions copt{o.text_field, o.max_tokens, 0, !o.quiet};
  const nlohmann::json source = token_source(o.corpus, copt, tok, c.eos_id);
  const std::string cache_path = (run / "corpus.tokens").string();
  const TokenCache tokens = [&] {
    if (o.resume && fs::exists(cache_path)) {
      TokenCache t = TokenCache::open(cache_path);
      check_token_source(t, source);
      if (!o.quiet)
        std::fprintf(stderr, "corpus: %zu tokens from the run's token cache %s\n",
                     t.tokens().size(), cache_path.c_str());
      return t;
    }
    fs::create_directories(run);
    return TokenCache::create(cache_path, o.corpus, tok, c.eos_id, copt, source);
  }();
  const Chunks chunks(tokens.tokens(), o.seq, o.corpus.size() == 1 ? o.corpus[0] : "corpus");
  std::vector<std::string> heldout = heldout_prompts();
  if (!o.heldout.empty()) {
    heldout = read_nonblank_lines(o.heldout);
    if (heldout.empty()) throw Error(o.heldout, "no held-out text (one prompt per line)");
  }
  // Scored as the plan's diagnosis read its prompts: with <s> first when it did (as `demo` and
  // `ppl --bos` score them), so a checkpoint has one held-out PPL.
  std::vector<std::vector<int32_t>> heldout_ids;
  for (const auto& h : heldout) {
    heldout_ids.push_back(plan.bos ? std::vector<int32_t>{int32_t(c.bos_id)}
                                   : std::vector<int32_t>{});
    const auto ids = tok.encode(h);
    heldout_ids.back().insert(heldout_ids.back().end(), ids.begin(), ids.end());
  }

  fs::create_directories(run / "checkpoints");
  fs::create_directories(run / "diagnoses");

  const int64_t steps_per_epoch = (int64_t(chunks.size()) + o.accum - 1) / o.accum;
  const int64_t total = steps_per_epoch * o.epochs;
  const int64_t warmup = o.warmup >= 0 ? o.warmup : default_warmup(total);
  const nlohmann::json options = {
      {"model", o.model},
      {"plan", o.plan},
      {"corpus", o.corpus},
      {"text_field", o.text_field},
      {"max_tokens", o.max_tokens},
      {"tokens", tokens.tokens().size()},
      {"lr", o.lr},
      {"accum", o.accum},
      {"seq", o.seq},
      {"epochs", o.epochs},
      {"warmup", warmup},
      {"clip", o.clip},
      {"seed", o.seed},
      {"reinit", o.reinit},
      {"init", o.init == InitKind::XavierNormal ? "xavier-normal" : "xavier-uniform"},
      {"eval_every", o.eval_every},
      {"eval_steps", o.eval_steps},
      {"patience", o.patience},
      {"device", device == DeviceKind::cuda ? "cuda" : "cpu"},
      {"chunks", chunks.size()},
      {"steps_per_epoch", steps_per_epoch},
      {"total_steps", total}};

  // Small models (the demo's d = 128) run the micro-batches one per CPU thread; large ones keep
  // every thread inside each operation, where their matrices keep them busy.
  const int seq_threads =
      c.hidden < 512 ? std::max(1, std::min(omp_get_max_threads(), o.accum)) : 1;
  const AdamWConfig adam{o.lr, 0.9, 0.999, 1e-8, 0.0};
  const std::unique_ptr<Surgery> surgery =
      make_surgery(model, device, o.gpu_dtype, targets, adam, seq_threads);
  Engine& engine = surgery->engine();
  if (!o.quiet) std::fprintf(stderr, "repair: on %s\n", engine.device().c_str());

  // Baseline diagnosis of the input model: the reference for drift of the watched heads.
  DiagnoseOptions dopt;
  dopt.bos = plan.bos;
  const Diagnosis before = diagnose(engine, tok, dopt, o.model);
  // Full diagnoses (here and at each evaluation) in `diagnose --json` form, for drift and report.
  write_file_atomic((run / "diagnosis_before.json").string(), to_json(before).dump(1) + "\n");
  TargetSlices slices = surgery->masters();
  AdamState adam_state = surgery->adam();
  if (o.reinit) reinitialize(slices, o.init, o.seed);
  RunState st;
  if (resume) {
    read_run_state(o.out_dir, slices, adam_state, st, options);
  } else {
    write_file_atomic((run / "plan.json").string(), plan.to_json().dump(1) + "\n");
    write_file_atomic((run / "config.json").string(), options.dump(1) + "\n");
  }
  surgery->set(slices, adam_state);

  // A fixed sample of chunks for the training PPL.
  std::vector<std::vector<int32_t>> train_sample;
  for (size_t i : epoch_order(chunks.size(), o.seed ^ 0x5A5A, -1))
    if (int(train_sample.size()) < o.train_ppl_chunks) train_sample.push_back(chunks.copy(i));

  auto evaluate = [&](int64_t epoch_done) {
    const auto t0 = std::chrono::steady_clock::now();
    const Diagnosis now = diagnose(engine, tok, dopt, o.out_dir);
    write_file_atomic((run / "diagnoses" / ("step-" + std::to_string(st.step) + ".json")).string(),
                      to_json(now).dump(1) + "\n");
    int woken = 0;
    for (const HeadRef& t : targets) woken += now.class_of(t.layer, t.head) == HeadClass::Healthy;
    nlohmann::json drift = nlohmann::json::array();
    for (const HeadRef& h : plan.watch_list()) {
      const double delta = now.at(h.layer, h.head).bos_mass - before.at(h.layer, h.head).bos_mass;
      if (std::abs(delta) > 0.05)
        drift.push_back({{"layer", h.layer}, {"head", h.head}, {"delta", delta}});
    }
    const double train_ppl = perplexity(engine, train_sample, o.seq).ppl;
    const double heldout_ppl = perplexity(engine, heldout_ids, 1 << 20).ppl;
    nlohmann::json gens = nlohmann::json::array();
    for (const char* p : kGenPrompts) {
      const auto ids = greedy_generate(engine, tok.encode(p), o.gen_tokens);
      gens.push_back({{"prompt", p}, {"text", tok.decode(ids)}});
    }
    nlohmann::json e = {
        {"epoch", epoch_done},
        {"step", st.step},
        {"tokens", st.step * int64_t(o.accum) * o.seq},
        {"train_loss", st.loss_count ? nlohmann::json(st.loss_sum / double(st.loss_count))
                                     : nlohmann::json(nullptr)},
        {"train_ppl", train_ppl},
        {"heldout_ppl", heldout_ppl},
        {"heads_woken", woken},
        {"targets", targets.size()},
        {"frozen_watched", plan.watch_list().size()},
        {"frozen_drift", drift.size()},
        {"frozen_drift_heads", drift},
        {"summary", to_json(now)["summary"]},
        {"generations", gens},
        {"seconds", seconds_since(t_start)},
        {"eval_seconds", seconds_since(t0)}};
    st.trajectory.push_back(e);
    st.loss_sum = 0;
    st.loss_count = 0;
    const std::string ck = (run / "checkpoints" / ("step-" + std::to_string(st.step))).string();
    write_with_slices(ck, model.checkpoint(), surgery->masters());
    if (heldout_ppl < st.best_ppl) {
      st.best_ppl = heldout_ppl;
      st.best_step = st.step;
      st.evals_since_best = 0;
      write_with_slices((run / "best").string(), model.checkpoint(), surgery->masters());
    } else {
      ++st.evals_since_best;
    }
    write_file_atomic((run / "trajectory.json").string(), st.trajectory.dump(1) + "\n");
    st.eval_pending = false;
    save_state(run, surgery->masters(), surgery->adam(), st, options);
    if (!o.quiet)
      std::fprintf(
          stderr,
          "eval step %lld (epoch %lld): woken %d/%zu, frozen drift %zu/%zu, train ppl %.3f, "
          "held-out ppl %.3f%s\n",
          (long long)st.step, (long long)epoch_done, woken, targets.size(), drift.size(),
          plan.watch_list().size(), train_ppl, heldout_ppl,
          st.best_step == st.step ? " (best)" : "");
  };

  if (!o.quiet)
    std::fprintf(stderr,
                 "repair: %zu target heads in %zu layers, %zu chunks of %d tokens, %lld steps "
                 "(%lld per epoch, warm-up %lld)%s\n",
                 targets.size(), plan.targets.size(), chunks.size(), o.seq, (long long)total,
                 (long long)steps_per_epoch, (long long)warmup,
                 resume ? (", resuming at step " + std::to_string(st.step)).c_str() : "");
  const auto t_train = std::chrono::steady_clock::now();
  auto last_save = t_train;
  const int64_t step0 = st.step;
  auto last_print = t_train;  // progress lines after the first step, then at most every 2 s
  int64_t tokens_done = 0;
  bool stopped_early = false;
  auto evaluate_due = [&] {
    evaluate(st.step / steps_per_epoch);
    stopped_early = st.evals_since_best >= o.patience;
    if (stopped_early && !o.quiet)
      std::fprintf(stderr, "early stop: held-out PPL has not improved for %d evaluations\n",
                   o.patience);
  };
  // Ctrl-C abandons the step (or evaluation) in progress at its next layer: its gradients live
  // only in the surgery's accumulators (gone with the process), the slices, moments and counters
  // are still those of the last completed step, and the data order is a function of the step. The
  // state saved is therefore the one an uninterrupted run had after that step, and --resume redoes
  // the abandoned work.
  try {
    if (st.eval_pending) evaluate_due();
    while (st.step < total && !stopped_early) {
      check_interrupted();
      const int64_t epoch = st.step / steps_per_epoch, in_epoch = st.step % steps_per_epoch;
      const auto order = epoch_order(chunks.size(), o.seed, epoch);
      const size_t first = size_t(in_epoch) * size_t(o.accum);
      const size_t last = std::min(order.size(), first + size_t(o.accum));
      const double n_micro = double(last - first);
      std::vector<std::vector<int32_t>> micro;  // copied out of the mapped stream
      for (size_t i = first; i < last; ++i) micro.push_back(chunks.copy(order[i]));
      std::vector<const std::vector<int32_t>*> batch;
      for (const auto& m : micro) batch.push_back(&m);
      const double loss = surgery->accumulate(batch, 1.0 / (n_micro * (o.seq - 1)));
      if (!std::isfinite(loss))
        throw Error(o.out_dir, "loss became " + std::to_string(loss) + " at step " +
                                   std::to_string(st.step + 1) +
                                   ": stopped; the last checkpoint and state are intact");
      const double lr = o.lr * lr_factor(st.step, warmup, total);
      surgery->step(lr, o.clip);
      ++st.step;
      tokens_done += int64_t(n_micro) * o.seq;
      st.loss_sum += loss;
      ++st.loss_count;
      const double since_print = seconds_since(last_print);
      if (!o.quiet && (since_print >= 2.0 || st.step == step0 + 1 || st.step == total)) {
        last_print = std::chrono::steady_clock::now();
        const double el = seconds_since(t_train);
        const double tps = double(tokens_done) / el;
        const double eta = el / double(st.step - step0) * double(total - st.step);
        const int64_t mem = surgery->device_memory_bytes();
        const std::string mem_note =
            mem > 0 ? " GPU " + std::to_string(mem >> 20) + " MiB" : std::string();
        std::fprintf(stderr, "step %lld/%lld epoch %lld loss %.4f lr %.3g %.0f tok/s%s ETA %.0fs\n",
                     (long long)st.step, (long long)total, (long long)epoch + 1, loss, lr, tps,
                     mem_note.c_str(), eta);
      }
      const bool epoch_end = st.step % steps_per_epoch == 0;
      st.eval_pending = (epoch_end && (st.step / steps_per_epoch) % o.eval_every == 0) ||
                        (o.eval_steps > 0 && st.step % o.eval_steps == 0) || st.step == total;
      if (st.eval_pending) {
        evaluate_due();  // saves the state
        last_save = std::chrono::steady_clock::now();
      } else if ((o.save_every_steps > 0 && st.step % o.save_every_steps == 0) ||
                 (o.save_every_minutes > 0 &&
                  seconds_since(last_save) >= 60 * o.save_every_minutes)) {
        save_state(run, surgery->masters(), surgery->adam(), st, options);
        last_save = std::chrono::steady_clock::now();
      }
      if (o.interrupt_after_steps > 0 && st.step == o.interrupt_after_steps) request_interrupt();
    }
  } catch (const Interrupted&) {
    save_state(run, surgery->masters(), surgery->adam(), st, options);
    std::fprintf(stderr, "interrupted: state saved at step %lld; continue with --resume\n",
                 (long long)st.step);
    return 130;
  }
  write_with_slices((run / "final").string(), model.checkpoint(), surgery->masters());
  if (!o.quiet)
    std::fprintf(stderr, "done: %lld steps, best held-out PPL %.3f at step %lld, %s\n",
                 (long long)st.step, st.best_ppl, (long long)st.best_step, o.out_dir.c_str());
  return 0;
}

}  // namespace hs
