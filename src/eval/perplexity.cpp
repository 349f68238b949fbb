#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "util/error.h"

namespace hs {

PerplexityResult perplexity(Engine& model, const std::vector<std::vector<int32_t>>& seqs,
                            int64_t max_length,
                            const std::function<void(int64_t, int64_t)>& progress,
                            const std::vector<uint8_t>& ablate_mlp) {
  if (max_length < 2) throw Error("--max-length", "must be at least 2");
  struct Window {
    size_t seq;
    std::vector<int32_t> ids;
  };
  std::vector<Window> windows;
  for (size_t i = 0; i < seqs.size(); ++i)
    for (size_t p = 0; p + 1 < seqs[i].size(); p += size_t(max_length)) {
      const size_t e = std::min(seqs[i].size(), p + size_t(max_length));
      if (e - p >= 2) windows.push_back({i, {seqs[i].begin() + p, seqs[i].begin() + e}});
    }
  // Batches of windows bounded by ~64 MB of residual stream, so long texts stay in memory while
  // a streamed model still converts each layer only once per batch.
  const int64_t budget_tokens =
      std::max<int64_t>(1, (int64_t(64) << 20) / (4 * model.config().hidden));
  PerplexityResult r;
  r.sequences = int64_t(seqs.size());
  std::vector<double> nll(seqs.size(), 0);
  std::vector<int64_t> count(seqs.size(), 0);
  double total = 0;
  ForwardOptions opts;
  opts.nll = true;
  opts.ablate_mlp = ablate_mlp;
  for (size_t b = 0; b < windows.size();) {
    std::vector<std::vector<int32_t>> batch;
    std::vector<size_t> owner;
    int64_t tokens = 0;
    while (b < windows.size() &&
           (batch.empty() || tokens + int64_t(windows[b].ids.size()) <= budget_tokens)) {
      tokens += int64_t(windows[b].ids.size());
      batch.push_back(std::move(windows[b].ids));
      owner.push_back(windows[b].seq);
      ++b;
    }
    auto outs = model.forward(batch, opts);
    for (size_t k = 0; k < outs.size(); ++k) {
      nll[owner[k]] += outs[k].nll_sum;
      count[owner[k]] += outs[k].predicted;
      total += outs[k].nll_sum;
      r.tokens_scored += outs[k].predicted;
    }
    r.windows += int64_t(batch.size());
    if (progress) progress(int64_t(b), int64_t(windows.size()));
  }
  if (r.tokens_scored == 0)
    throw Error("perplexity", "no sequence has two or more tokens to score");
  r.nll_mean = total / double(r.tokens_scored);
  r.ppl = std::exp(r.nll_mean);
  for (size_t i = 0; i < seqs.size(); ++i)
    r.sequence_nll_mean.push_back(count[i] ? nll[i] / double(count[i])
                                           : std::numeric_limits<double>::quiet_NaN());
  return r;
}

}  // namespace hs
