#include "eval/generate.h"

#include "util/interrupt.h"

namespace hs {

namespace {

// splitmix64 of (seed, sample): the seed of sample s's random stream, far from its neighbours'.
uint64_t stream_seed(uint64_t seed, uint64_t sample) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (sample + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<Completion> generate(Engine& e, std::span<const int32_t> prompt,
                                 const GenerateOptions& o) {
  const int64_t V = e.config().vocab, eos = e.config().eos_id, P = int64_t(prompt.size());
  std::vector<Completion> out(o.n);
  if (o.max_new_tokens <= 0 || o.n <= 0) return out;
  const auto dec = e.decoder(o.n, P + o.max_new_tokens);
  // Plain greedy decoding takes each feed's argmax from the decoder where it offers one (a GPU
  // chooses on the device); otherwise the logits come back and next_token() chooses.
  const bool plain_greedy = o.sampling.temperature <= 0 && o.sampling.repetition_penalty == 1.0;
  const std::vector<float>* logits = nullptr;
  const std::vector<int32_t>* chosen = nullptr;
  auto extend = [&](std::span<const IncrementalDecoder::Feed> feeds) {
    chosen = plain_greedy ? dec->extend_argmax(feeds) : nullptr;
    if (!chosen) logits = &dec->extend(feeds);
  };
  const IncrementalDecoder::Feed prefill{0, prompt};
  extend({&prefill, 1});
  for (int64_t s = 1; s < o.n; ++s) dec->fork(0, s);

  std::vector<Rng> rngs;
  std::vector<std::vector<int32_t>> context(o.n,
                                            std::vector<int32_t>(prompt.begin(), prompt.end()));
  for (int64_t s = 0; s < o.n; ++s) rngs.emplace_back(stream_seed(o.seed, uint64_t(s)));
  // row[s]: the row of the last step's output that belongs to sample s (all share the prefill's
  // row 0).
  std::vector<int64_t> active(o.n), row(o.n, 0);
  for (int64_t s = 0; s < o.n; ++s) active[s] = s;
  std::vector<float> work(V);
  std::vector<int32_t> next(o.n);
  for (int64_t k = 0; k < o.max_new_tokens && !active.empty(); ++k) {
    check_interrupted();  // a GPU step replays a captured graph, with no layer loop on the host
    std::vector<int64_t> still;
    std::vector<IncrementalDecoder::Feed> feeds;
    for (int64_t s : active) {
      if (chosen) {
        next[s] = (*chosen)[row[s]];
      } else {
        work.assign(logits->begin() + row[s] * V, logits->begin() + (row[s] + 1) * V);
        next[s] = next_token(work, context[s], o.sampling, rngs[s]);
      }
      context[s].push_back(next[s]);
      out[s].ids.push_back(next[s]);
      if (o.stop_at_eos && next[s] == eos) {
        out[s].eos = true;
        continue;
      }
      row[s] = int64_t(feeds.size());
      feeds.push_back({s, {&next[s], 1}});
      still.push_back(s);
    }
    active = std::move(still);
    if (k + 1 < o.max_new_tokens && !feeds.empty()) extend(feeds);
  }
  return out;
}

std::vector<int32_t> greedy_generate(Engine& e, std::vector<int32_t> prompt, int n) {
  if (prompt.empty() || n <= 0) return prompt;
  GenerateOptions o;
  o.max_new_tokens = n;
  o.sampling.temperature = 0;
  const auto c = generate(e, prompt, o);
  prompt.insert(prompt.end(), c[0].ids.begin(), c[0].ids.end());
  return prompt;
}

}  // namespace hs
