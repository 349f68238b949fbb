// Measurements of the paper's section 4.7: MLP dormancy and layer-ablation sensitivity.
#include <cstdio>
#include <iostream>

#include "cli/common.h"
#include "cli/model_loading.h"
#include "eval/dormancy.h"
#include "eval/perplexity.h"
#include "util/error.h"

namespace hs::cli {

namespace {

// "0-3,8,10-11" → groups of layer indices; errors name the option.
std::vector<std::vector<int>> parse_groups(const std::string& spec, int layers) {
  std::vector<std::vector<int>> groups;
  size_t pos = 0;
  while (pos < spec.size()) {
    const size_t comma = spec.find(',', pos);
    const std::string item = spec.substr(pos, comma == std::string::npos ? comma : comma - pos);
    int lo = -1, hi = -1, n = 0;
    char extra = 0;
    if (std::sscanf(item.c_str(), "%d-%d%n%c", &lo, &hi, &n, &extra) == 2 &&
        size_t(n) == item.size()) {
    } else if (std::sscanf(item.c_str(), "%d%n%c", &lo, &n, &extra) == 1 &&
               size_t(n) == item.size()) {
      hi = lo;
    } else {
      throw Error("--groups", "'" + item + "' is not a layer or a range A-B");
    }
    if (lo < 0 || hi < lo || hi >= layers)
      throw Error("--groups", "'" + item + "' is outside layers 0.." + std::to_string(layers - 1));
    std::vector<int> g;
    for (int l = lo; l <= hi; ++l) g.push_back(l);
    groups.push_back(std::move(g));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return groups;
}

}  // namespace

void add_dormancy(CLI::App& app) {
  struct Args {
    std::string model, json;
    double threshold = 0.01;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "dormancy",
      "MLP dormancy: neuron i of a layer is dormant when ||W_up[i,:]|| * ||W_down[:,i]|| is "
      "below the threshold. Per layer and total.");
  sub->add_option(
         "MODEL", a->model,
         "checkpoint directory, or hub id org/name[@revision] (downloaded when not cached)")
      ->required();
  sub->add_option("--threshold", a->threshold, "dormant below this product of norms")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--json", a->json, "write the result as JSON to FILE ('-' = stdout only)");
  sub->callback(interruptible([a] {
    check_output_path(a->json);
    LoadedModel m = load_model(a->model, false, /*stream=*/true);
    const auto r = mlp_dormancy(*m.model, a->threshold);
    int64_t total = 0, dormant = 0;
    nlohmann::json layers = nlohmann::json::array();
    for (size_t l = 0; l < r.size(); ++l) {
      total += r[l].neurons;
      dormant += r[l].dormant;
      layers.push_back({{"layer", l},
                        {"neurons", r[l].neurons},
                        {"dormant", r[l].dormant},
                        {"fraction", double(r[l].dormant) / double(r[l].neurons)}});
      if (a->json != "-")
        std::printf("layer %3zu  dormant %6lld of %6lld  (%.2f%%)\n", l, (long long)r[l].dormant,
                    (long long)r[l].neurons, 100.0 * double(r[l].dormant) / double(r[l].neurons));
    }
    const double frac = double(dormant) / double(total);
    if (a->json != "-")
      std::printf("total      dormant %6lld of %6lld  (%.2f%%), threshold %g\n", (long long)dormant,
                  (long long)total, 100.0 * frac, a->threshold);
    if (!a->json.empty())
      write_json(a->json,
                 {{"model", a->model},
                  {"threshold", a->threshold},
                  {"layers", layers},
                  {"total", {{"neurons", total}, {"dormant", dormant}, {"fraction", frac}}}});
  }));
}

void add_ablate(CLI::App& app) {
  struct Args {
    std::string model, json, groups;
    std::vector<std::string> texts;
    bool heldout = false, quiet = false;
    int64_t max_length = 1024;
    DeviceArgs dev;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "ablate",
      "Layer-ablation sensitivity: perplexity with each layer's MLP output zeroed (and with "
      "--groups of layers), against the intact model.");
  sub->add_option(
         "MODEL", a->model,
         "checkpoint directory, or hub id org/name[@revision] (downloaded when not cached)")
      ->required();
  sub->add_option("--text", a->texts, "UTF-8 text file to score (repeatable)");
  sub->add_flag("--heldout", a->heldout,
                "the paper's 12 held-out prompts (default without --text)");
  sub->add_option("--groups", a->groups, "also ablate groups of layers together, e.g. 0-3,4-7,9");
  sub->add_option("--max-length", a->max_length, "window length for long texts")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(2), int64_t(1) << 20));
  sub->add_option("--json", a->json, "write the result as JSON to FILE ('-' = stdout only)");
  sub->add_flag("-q,--quiet", a->quiet, "no progress lines");
  add_device_options(sub, a->dev);
  sub->callback(interruptible([a] {
    check_output_path(a->json);
    LoadedModel m = load_model(a->model, true, false, a->dev);
    const int L = int(m.model->config().n_layer);
    std::vector<std::vector<int>> runs;
    for (int l = 0; l < L; ++l) runs.push_back({l});
    const size_t n_single = runs.size();
    if (!a->groups.empty())
      for (auto& g : parse_groups(a->groups, L)) runs.push_back(std::move(g));
    ScoredTexts texts;
    add_texts(texts, m, a->texts,
              a->heldout || a->texts.empty() ? std::optional<std::string>("") : std::nullopt,
              false);
    const double base = perplexity(*m.engine, texts.seqs, a->max_length).ppl;
    Progress progress("ablate: runs", !a->quiet);
    nlohmann::json layers = nlohmann::json::array(), groups = nlohmann::json::array();
    if (a->json != "-") std::printf("intact model: ppl %.4f\n", base);
    for (size_t k = 0; k < runs.size(); ++k) {
      std::vector<uint8_t> mask(L, 0);
      for (int l : runs[k]) mask[l] = 1;
      const double ppl = perplexity(*m.engine, texts.seqs, a->max_length, {}, mask).ppl;
      const nlohmann::json e = {{"layers", runs[k]}, {"ppl", ppl}, {"delta", ppl - base}};
      (k < n_single ? layers : groups).push_back(e);
      progress.update(int64_t(k + 1), int64_t(runs.size()));
      if (a->json != "-")
        std::printf("MLP of layer%s %-12s zeroed: ppl %12.4f  (%+.4f)\n",
                    runs[k].size() > 1 ? "s" : " ",
                    (std::to_string(runs[k].front()) +
                     (runs[k].size() > 1 ? "-" + std::to_string(runs[k].back()) : ""))
                        .c_str(),
                    ppl, ppl - base);
    }
    progress.finish();
    if (!a->json.empty())
      write_json(a->json, {{"model", a->model},
                           {"sequences", texts.seqs.size()},
                           {"baseline_ppl", base},
                           {"layers", layers},
                           {"groups", groups}});
  }));
}

}  // namespace hs::cli
