#include "diagnose/run.h"

#include <cmath>

#include "engine/cpu/forward.h"
#include "eval/heldout.h"
#include "util/error.h"

namespace hs {

Diagnosis diagnose(Engine& model, const Tokenizer& tok, const DiagnoseOptions& opts,
                   const std::string& model_name) {
  const ModelConfig& c = model.config();
  Diagnosis d;
  d.model = model_name;
  d.family = family_name(c.family);
  d.layers = int(c.n_layer);
  d.heads = int(c.n_head);
  d.bos = opts.bos;
  d.thresholds = opts.thresholds;
  d.prompts = opts.prompts.empty() ? std::vector<std::string>{kDiagnosticPrompt} : opts.prompts;
  d.slopes.assign(model.slopes().begin(), model.slopes().end());

  std::vector<std::vector<int32_t>> seqs;
  for (const std::string& p : d.prompts) {
    std::vector<int32_t> ids;
    if (opts.bos) ids.push_back(int32_t(c.bos_id));
    const auto enc = tok.encode(p);
    ids.insert(ids.end(), enc.begin(), enc.end());
    if (ids.empty()) throw Error("prompt", "empty prompt: nothing to diagnose");
    d.tokens.push_back(int(ids.size()));
    seqs.push_back(std::move(ids));
  }
  ForwardOptions fo;
  fo.head_stats = true;
  fo.progress = opts.progress;
  const auto outs = model.forward(seqs, fo);

  const size_t n = outs.size(), LH = size_t(c.n_layer * c.n_head);
  d.metrics.resize(LH);
  auto mean_std = [&](auto field, size_t k, double& mean, double& sd) {
    double s = 0, s2 = 0;
    for (const auto& o : outs) s += (o.*field)[k];
    mean = s / double(n);
    for (const auto& o : outs) s2 += ((o.*field)[k] - mean) * ((o.*field)[k] - mean);
    sd = n > 1 ? std::sqrt(s2 / double(n)) : 0.0;
  };
  for (size_t k = 0; k < LH; ++k) {
    HeadMetrics& m = d.metrics[k];
    mean_std(&SequenceOutput::bos_mass, k, m.bos_mass, m.bos_mass_std);
    mean_std(&SequenceOutput::entropy, k, m.entropy, m.entropy_std);
    mean_std(&SequenceOutput::local_mass, k, m.local_mass, m.local_mass_std);
  }
  return d;
}

}  // namespace hs
