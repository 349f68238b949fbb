// headsurgeon ppl MODEL: perplexity on text files, pre-tokenized id files or the paper's
// held-out prompts.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "cli/common.h"
#include "cli/model_loading.h"
#include "eval/heldout.h"
#include "eval/perplexity.h"
#include "util/error.h"

namespace hs::cli {

namespace {

struct PplArgs {
  std::string model;
  std::vector<std::string> texts, id_files;
  std::optional<std::string> heldout;  // "" = the paper's 12 prompts, else a file of prompts
  bool bos = false, quiet = false;
  int64_t max_length = 1024;
  std::string json;
  DeviceArgs dev;
};

// One sequence per non-empty line of whitespace-separated ids; errors name FILE:LINE.
std::vector<std::vector<int32_t>> read_id_file(const std::string& path, int64_t vocab) {
  std::istringstream in(read_file(path, false));
  std::vector<std::vector<int32_t>> seqs;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    std::istringstream ls(line);
    std::vector<int32_t> ids;
    for (std::string tok; ls >> tok;) {
      char* end = nullptr;
      const long long v = std::strtoll(tok.c_str(), &end, 10);
      const std::string where = path + ":" + std::to_string(lineno);
      if (*end != '\0') throw Error(where, "'" + tok + "' is not an integer token id");
      if (v < 0 || v >= vocab)
        throw Error(where, "token id " + tok + " is outside the vocabulary (0.." +
                               std::to_string(vocab - 1) + ")");
      ids.push_back(int32_t(v));
    }
    if (!ids.empty()) seqs.push_back(std::move(ids));
  }
  if (seqs.empty()) throw Error(path, "no token ids in file");
  return seqs;
}

void run_ppl(const PplArgs& a) {
  if (a.texts.empty() && a.id_files.empty() && !a.heldout)
    throw Error("ppl", "nothing to score: give --text FILE, --ids FILE or --heldout");
  check_output_path(a.json);
  const bool need_tok = !a.texts.empty() || a.heldout;
  LoadedModel m = load_model(a.model, need_tok, false, a.dev);
  const ModelConfig& c = m.model->config();

  ScoredTexts texts;
  add_texts(texts, m, a.texts, std::nullopt, a.bos);
  for (const auto& f : a.id_files) {
    auto s = read_id_file(f, c.vocab);
    for (size_t i = 0; i < s.size(); ++i) {
      texts.seqs.push_back(std::move(s[i]));
      texts.sources.push_back(f + ":" + std::to_string(i + 1));
    }
  }
  add_texts(texts, m, {}, a.heldout, a.bos);
  const auto& seqs = texts.seqs;
  const auto& sources = texts.sources;

  const auto t0 = std::chrono::steady_clock::now();
  Progress progress("ppl: windows", !a.quiet);
  const PerplexityResult r =
      perplexity(*m.engine, seqs, a.max_length,
                 [&](int64_t done, int64_t total) { progress.update(done, total); });
  progress.finish();
  const double secs = seconds_since(t0);

  nlohmann::json j = {{"model", a.model},
                      {"sequences", r.sequences},
                      {"windows", r.windows},
                      {"max_length", a.max_length},
                      {"tokens_scored", r.tokens_scored},
                      {"nll_mean", r.nll_mean},
                      {"ppl", r.ppl},
                      {"seconds", secs},
                      {"device", m.engine->device()}};
  nlohmann::json per = nlohmann::json::array();
  for (size_t i = 0; i < seqs.size(); ++i) {
    const double nll = r.sequence_nll_mean[i];
    per.push_back(
        {{"source", sources[i]},
         {"tokens", seqs[i].size()},
         {"nll_mean", std::isnan(nll) ? nlohmann::json(nullptr) : nlohmann::json(nll)},
         {"ppl", std::isnan(nll) ? nlohmann::json(nullptr) : nlohmann::json(std::exp(nll))}});
  }
  j["per_sequence"] = per;

  if (a.json != "-") {
    if (seqs.size() > 1)
      for (size_t i = 0; i < seqs.size(); ++i)
        std::printf("  %-40s %6zu tokens  ppl %10.3f\n", sources[i].c_str(), seqs[i].size(),
                    std::exp(r.sequence_nll_mean[i]));
    std::printf("sequences %lld  tokens scored %lld  nll_mean %.6f  ppl %.4f\n",
                (long long)r.sequences, (long long)r.tokens_scored, r.nll_mean, r.ppl);
    std::fflush(stdout);
  }
  if (!a.json.empty()) write_json(a.json, j);
  if (!a.quiet)
    std::cerr << "ppl: load " << m.seconds << " s, scoring " << secs << " s ("
              << double(r.tokens_scored + r.windows) / secs << " tok/s) on " << m.engine->device()
              << "\n";
}

}  // namespace

void add_ppl(CLI::App& app) {
  auto a = std::make_shared<PplArgs>();
  CLI::App* sub = app.add_subcommand(
      "ppl", "Perplexity: mean next-token NLL over every predicted token, and exp of it.");
  sub->add_option(
         "MODEL", a->model,
         "checkpoint directory, or hub id org/name[@revision] (downloaded when not cached)")
      ->required();
  sub->add_option("--text", a->texts, "UTF-8 text file, scored on its own (repeatable)");
  sub->add_option("--ids", a->id_files,
                  "pre-tokenized file: one sequence per line, whitespace-separated ids; each "
                  "line scored on its own (repeatable)");
  sub->add_option("--heldout", a->heldout,
                  "held-out prompts scored as repair and demo score them, each on its own: the "
                  "paper's 12 (built in), or FILE with one prompt per line (--heldout=FILE)")
      ->expected(0, 1)
      ->default_str("");
  sub->add_option("--max-length", a->max_length,
                  "longer sequences are cut into non-overlapping windows of this many tokens, "
                  "each scored on its own")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(2), int64_t(1) << 20));
  add_device_options(sub, a->dev);
  sub->add_flag("--bos", a->bos, "prepend <s> to tokenized texts");
  sub->add_option("--json", a->json, "write the result as JSON to FILE ('-' = stdout only)");
  sub->add_flag("-q,--quiet", a->quiet, "no progress or timing lines on stderr");
  sub->callback(interruptible([a] { run_ppl(*a); }));
}

}  // namespace hs::cli
