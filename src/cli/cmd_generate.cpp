// headsurgeon generate MODEL: continue prompts with the KV-cache decoder, greedily or sampled;
// a prompts file gives one JSONL line per completion (the paper's sample comparisons).
#include <cstdio>
#include <iostream>
#include <sstream>

#include "cli/common.h"
#include "cli/model_loading.h"
#include "eval/generate.h"
#include "util/error.h"

namespace hs::cli {

namespace {

struct GenerateArgs {
  std::string model, prompt, prompts_file, json, out = "-";
  GenerateOptions gen;
  bool bos = false, ignore_eos = false, quiet = false;
  DeviceArgs dev;
};

struct Prompt {
  std::string text, source;  // source: "--prompt" or FILE:LINE, for errors
  int64_t line = 0;
};

// One prompt per line; blank (whitespace-only) lines are skipped, a trailing \r is dropped.
std::vector<Prompt> read_prompts_file(const std::string& path) {
  std::istringstream in(read_file(path, true));
  std::vector<Prompt> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t\f\v") == std::string::npos) continue;
    out.push_back({line, path + ":" + std::to_string(n), n});
  }
  if (out.empty()) throw Error(path, "no prompts (one per line; blank lines are skipped)");
  return out;
}

void run_generate(GenerateArgs a) {
  const bool batch = !a.prompts_file.empty();
  check_output_path(a.json);
  if (batch) check_output_path(a.out);
  // Read the prompts before the (possibly long) model load, so a bad file fails at once.
  std::vector<Prompt> prompts =
      batch ? read_prompts_file(a.prompts_file) : std::vector<Prompt>{{a.prompt, "--prompt", 0}};
  LoadedModel m = load_model(a.model, true, false, a.dev);
  const Tokenizer& tok = *m.tokenizer;
  // As HF's decode: ids the tokenizer does not know (embedding rows past its vocabulary, e.g.
  // BLOOM's 200 padding rows, which a model can still emit) are left out of the text.
  auto text_of = [&, known = int64_t(tok.vocab_size())](std::span<const int32_t> v) {
    std::vector<int32_t> k;
    for (int32_t id : v)
      if (id < known) k.push_back(id);
    return tok.decode(k);
  };
  a.gen.stop_at_eos = !a.ignore_eos;

  std::vector<std::vector<int32_t>> ids;
  for (const Prompt& p : prompts) {
    std::vector<int32_t> v;
    if (a.bos) v.push_back(int32_t(m.model->config().bos_id));
    const auto enc = tok.encode(p.text);
    v.insert(v.end(), enc.begin(), enc.end());
    if (v.empty()) throw Error(p.source, "empty prompt: nothing to continue (--bos starts at <s>)");
    ids.push_back(std::move(v));
  }

  const SamplingOptions& so = a.gen.sampling;
  // Ordered: a JSONL line reads prompt, sample, text, ... in this order.
  using ojson = nlohmann::ordered_json;
  const ojson settings = {{"max_new_tokens", a.gen.max_new_tokens},
                          {"temperature", so.temperature},
                          {"top_k", so.top_k},
                          {"top_p", so.top_p},
                          {"repetition_penalty", so.repetition_penalty},
                          {"seed", a.gen.seed},
                          {"n", a.gen.n},
                          {"bos", a.bos},
                          {"stop_at_eos", a.gen.stop_at_eos}};
  Progress progress("generate: prompts", !a.quiet && batch);
  std::string jsonl;
  ojson completions = ojson::array();
  int64_t new_tokens = 0;
  double gen_seconds = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<Completion> cs = generate(*m.engine, ids[i], a.gen);
    const double secs = seconds_since(t0);
    gen_seconds += secs;
    for (size_t s = 0; s < cs.size(); ++s) {
      std::vector<int32_t> all = ids[i];
      all.insert(all.end(), cs[s].ids.begin(), cs[s].ids.end());
      new_tokens += int64_t(cs[s].ids.size());
      ojson j = {{"sample", s},
                 {"text", text_of(all)},
                 {"completion", text_of(cs[s].ids)},
                 {"ids", all},
                 {"prompt_tokens", ids[i].size()},
                 {"new_tokens", cs[s].ids.size()},
                 {"stop", cs[s].eos ? "eos" : "length"},
                 {"seconds", secs}};
      if (batch) {
        ojson line = {{"model", a.model},
                      {"prompt_index", i},
                      {"line", prompts[i].line},
                      {"prompt", prompts[i].text}};
        line.update(j);
        line["settings"] = settings;
        const std::string text = line.dump() + "\n";
        if (a.out == "-")
          std::cout << text << std::flush;
        else
          jsonl += text;
      } else {
        if (a.json != "-") {
          if (cs.size() > 1)
            std::printf("--- sample %zu of %zu (%zu new tokens, %s) ---\n", s + 1, cs.size(),
                        cs[s].ids.size(), cs[s].eos ? "eos" : "length");
          std::printf("%s\n", text_of(all).c_str());
          std::fflush(stdout);
        }
        completions.push_back(std::move(j));
      }
    }
    char rate[64];
    std::snprintf(rate, sizeof rate, "%.1f tok/s", double(new_tokens) / gen_seconds);
    progress.update(int64_t(i + 1), int64_t(prompts.size()), rate);
  }
  progress.finish();
  if (batch && a.out != "-") write_output(a.out, jsonl);
  if (!a.json.empty())
    write_output(a.json, ojson({{"model", a.model},
                                {"prompt", a.prompt},
                                {"settings", settings},
                                {"completions", completions},
                                {"new_tokens", new_tokens},
                                {"seconds", gen_seconds},
                                {"tokens_per_second", double(new_tokens) / gen_seconds},
                                {"device", m.engine->device()}})
                                 .dump(1) +
                             "\n");
  if (!a.quiet)
    std::fprintf(stderr,
                 "generate: %zu prompt%s x %lld sample%s, %lld new tokens in %.2f s (%.1f tok/s), "
                 "load %.2f s, on %s\n",
                 prompts.size(), prompts.size() == 1 ? "" : "s", (long long)a.gen.n,
                 a.gen.n == 1 ? "" : "s", (long long)new_tokens, gen_seconds,
                 double(new_tokens) / gen_seconds, m.seconds, m.engine->device().c_str());
}

}  // namespace

void add_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* sub = app.add_subcommand(
      "generate",
      "Continue prompts with a KV cache: greedy (--temperature 0) or sampled with temperature, "
      "top-k, top-p and a repetition penalty, as Hugging Face's generate() does. Stops at </s>.");
  sub->add_option(
         "MODEL", a->model,
         "checkpoint directory, or hub id org/name[@revision] (downloaded when not cached)")
      ->required();
  auto* prompt = sub->add_option("--prompt", a->prompt, "the prompt; completions printed as text");
  auto* file = sub->add_option(
      "--prompts-file", a->prompts_file,
      "UTF-8 file, one prompt per line (blank lines skipped): one JSONL line per completion");
  prompt->excludes(file);
  sub->add_option("--max-new-tokens", a->gen.max_new_tokens, "new tokens per completion at most")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  sub->add_option("--temperature", a->gen.sampling.temperature, "softmax temperature; 0 = greedy")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  sub->add_option("--top-p", a->gen.sampling.top_p,
                  "nucleus: sample from the smallest set of tokens with probability >= p (1 = off)")
      ->capture_default_str()
      ->check(CLI::Range(1e-9, 1.0));
  sub->add_option("--top-k", a->gen.sampling.top_k,
                  "sample from the k most probable tokens only (0 = off); applied before top-p")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--repetition-penalty", a->gen.sampling.repetition_penalty,
                  "divide positive (multiply negative) logits of tokens already in the prompt or "
                  "completion by this (1 = off; the paper used 1.15)")
      ->capture_default_str()
      ->check(CLI::Range(1e-3, 1e3));
  sub->add_option("--seed", a->gen.seed,
                  "random seed; sample s of every prompt uses stream (seed, s), the same on every "
                  "machine")
      ->capture_default_str();
  sub->add_option("--n", a->gen.n, "completions per prompt, decoded together")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1024)));
  sub->add_flag("--bos", a->bos, "prepend <s> to every prompt (BLOOM's tokenizer adds none)");
  sub->add_flag("--ignore-eos", a->ignore_eos, "keep generating after </s>");
  sub->add_option("--json", a->json,
                  "with --prompt: write the completions as JSON to FILE ('-' = stdout only)")
      ->excludes(file);
  sub->add_option("--out", a->out,
                  "with --prompts-file: the JSONL file ('-' = stdout, the default)")
      ->capture_default_str()
      ->excludes(prompt);
  sub->add_flag("-q,--quiet", a->quiet, "no progress or timing lines on stderr");
  add_device_options(sub, a->dev);
  sub->callback(interruptible([a, prompt, file] {
    if (prompt->count() == 0 && file->count() == 0)
      throw CLI::RequiredError("--prompt or --prompts-file");
    run_generate(*a);
  }));
}

}  // namespace hs::cli
