#include "cli/model_loading.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "cli/common.h"
#include "eval/heldout.h"
#include "hub/hub.h"
#include "io/model_files.h"
#include "util/error.h"

namespace hs::cli {

void add_device_options(CLI::App* sub, DeviceArgs& a) {
  // The default may come from the environment (the test suite pins the CPU reference this way).
  if (const char* env = std::getenv("HEADSURGEON_DEVICE")) {
    a.device = env;
    a.device_from = "HEADSURGEON_DEVICE";
  }
  sub->add_option("--device", a.device,
                  "where to run: auto (CUDA when a usable GPU is present), cpu or cuda; the "
                  "default is $HEADSURGEON_DEVICE when set")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->each([&a](const std::string&) { a.device_from = "--device"; });
  sub->add_option("--gpu-dtype", a.gpu_dtype,
                  "weight type on the GPU: auto (the checkpoint's half type, bf16 for fp32 "
                  "checkpoints), bf16, f16 or f32 (fp32 products, for checking)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "bf16", "f16", "f32"}));
}

namespace {

std::string megabytes(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", double(bytes) / 1e6);
  return buf;
}

}  // namespace

std::string download_model(const std::string& spec, const std::vector<std::string>& include,
                           bool quiet) {
  const auto id = parse_hub_id(spec);
  if (!id) throw Error(spec, "not a hub id (org/name or org/name@revision)");
  hub::Settings s = hub::settings_from_env();
  if (offline()) s.offline = true;
  hub::Options o;
  o.include = include;
  // The progress line: rewritten in place on a terminal 10 times a second, a line every 5 s in
  // a log; nothing for downloads that take under a second (small files).
  const bool tty = ::isatty(STDERR_FILENO);
  const auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  bool printed = false;
  o.progress = [&](const hub::Progress& p) {
    const double el = seconds_since(t0);
    if (quiet || el < (tty ? 1.0 : 5.0) || seconds_since(last) < (tty ? 0.1 : 5.0)) return;
    last = std::chrono::steady_clock::now();
    const double rate = double(p.done) / el;
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s: %s of %s (%.0f%%), %d/%d files, %.1f MB/s, ETA %.0f s",
                  spec.c_str(), megabytes(p.done).c_str(), megabytes(p.total).c_str(),
                  p.total ? 100.0 * double(p.done) / double(p.total) : 100.0, p.files_done, p.files,
                  rate / 1e6, rate > 0 ? double(p.total - p.done) / rate : 0.0);
    std::cerr << (tty ? "\r\033[K" : "") << buf << (tty ? "" : "\n") << std::flush;
    printed = true;
  };
  const hub::Result r = hub::download(*id, s, o);
  if (printed && tty) std::cerr << "\n";
  if (!quiet && !s.offline) {
    std::cerr << "downloaded " << id->repo << "@" << r.commit << ": " << r.files << " files, ";
    char buf[96];
    std::snprintf(buf, sizeof buf, "%d fetched (%s in %.1f s, %.1f MB/s)\n", r.fetched,
                  megabytes(r.bytes).c_str(), r.seconds, double(r.bytes) / 1e6 / r.seconds);
    std::cerr << (r.fetched == 0 ? "all in the cache already\n" : buf);
  }
  return r.snapshot;
}

void fetch_model(const std::string& spec, const std::vector<std::string>& only) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(spec, ec)) return;
  const auto id = parse_hub_id(spec);
  // Not an id, or a path whose first folder is here (runs/pass1 mistyped): resolve_model_dir
  // names the problem, without asking the hub about "runs/pass1".
  if (!id || fs::is_directory(id->repo.substr(0, id->repo.find('/')), ec)) return;
  const std::string root = hub_cache_root();
  const auto snap = cached_snapshot(*id, root);
  auto cached = [&](const std::string& f) { return fs::is_regular_file(fs::path(*snap) / f, ec); };
  if (snap &&
      (only.empty() ? has_model_files(*snap) : std::all_of(only.begin(), only.end(), cached)))
    return;
  if (offline() || hub::settings_from_env().offline) {
    if (!snap)
      throw Error(spec, "not in the Hugging Face cache (" + root +
                            ") and offline (HF_HUB_OFFLINE or --offline): nothing is downloaded");
    return;  // what is cached: loading it names what is missing
  }
  download_model(spec, only, false);
}

LoadedModel load_model(const std::string& spec, bool need_tokenizer, bool stream,
                       const DeviceArgs& dev) {
  fetch_model(spec);
  const auto t0 = std::chrono::steady_clock::now();
  const DeviceKind kind = resolve_device(dev.device, dev.device_from);
  LoadedModel m;
  ModelOptions opts;
  if (stream || kind == DeviceKind::cuda) opts.cache_bytes = 0;
  m.model = std::make_unique<Model>(spec, opts);
  m.engine = make_engine(*m.model, kind, dev.gpu_dtype);
  if (need_tokenizer)
    m.tokenizer =
        std::make_unique<Tokenizer>(Tokenizer::from_file(m.model->checkpoint().tokenizer_path()));
  m.seconds = seconds_since(t0);
  return m;
}

void add_texts(ScoredTexts& out, const LoadedModel& m, const std::vector<std::string>& files,
               const std::optional<std::string>& heldout, bool bos) {
  auto add = [&](const std::string& text, const std::string& source) {
    std::vector<int32_t> ids;
    if (bos) ids.push_back(int32_t(m.model->config().bos_id));
    const auto enc = m.tokenizer->encode(text);
    ids.insert(ids.end(), enc.begin(), enc.end());
    if (ids.size() < 2) throw Error(source, "fewer than two tokens: nothing to predict");
    out.seqs.push_back(std::move(ids));
    out.sources.push_back(source);
  };
  for (const auto& f : files) {
    const std::string text = read_file(f, true);
    if (text.empty()) throw Error(f, "empty file");
    add(text, f);
  }
  if (heldout && heldout->empty()) {
    const auto& prompts = heldout_prompts();
    for (size_t i = 0; i < prompts.size(); ++i) add(prompts[i], "heldout:" + std::to_string(i + 1));
  } else if (heldout) {
    const auto prompts = read_nonblank_lines(*heldout);
    if (prompts.empty()) throw Error(*heldout, "no held-out text (one prompt per line)");
    for (size_t i = 0; i < prompts.size(); ++i)
      add(prompts[i], *heldout + ":" + std::to_string(i + 1));
  }
}

}  // namespace hs::cli
