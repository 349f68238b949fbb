#include "cli/model_loading.h"

#include <chrono>
#include <cstdlib>

#include "cli/common.h"
#include "eval/heldout.h"
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

LoadedModel load_model(const std::string& spec, bool need_tokenizer, bool stream,
                       const DeviceArgs& dev) {
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
