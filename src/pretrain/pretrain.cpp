#include "pretrain/pretrain.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "engine/cpu/optimizer.h"
#include "engine/cpu/save.h"
#include "engine/cpu/train.h"
#include "eval/perplexity.h"
#include "io/dtype.h"
#include "model/alibi.h"
#include "surgery/plan.h"
#include "surgery/schedule.h"
#include "text/bpe_trainer.h"
#include "text/corpus.h"
#include "text/token_cache.h"
#include "text/tokenizer.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/files.h"
#include "util/random.h"

namespace hs {

namespace fs = std::filesystem;

namespace {

// BLOOM's _init_weights: every matrix and the embedding N(0, 0.02), LayerNorms 1 and 0,
// biases 0. Tensors are drawn in checkpoint order from one stream, so a seed fixes them all.
TrainWeights init_weights(const ModelConfig& c, uint64_t seed) {
  TrainWeights w = TrainWeights::zeros(c);
  w.slopes = alibi_slopes(c.n_head, c.alibi_bias_max);
  for (auto& p : w.params())  // LayerNorm weights 1, biases 0
    if (p.per_layer ? role_is_norm_weight(p.layer_role) : role_is_norm_weight(p.model_role))
      std::fill(p.buf->begin(), p.buf->end(), 1.0f);
  Rng rng(seed);
  for (auto& p : w.params())
    if (p.matrix)  // vectors keep their constants
      rng.fill_normal(p.buf->data(), int64_t(p.buf->size()), 0.02);
  return w;
}

}  // namespace

void run_pretrain(const PretrainOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.seq < 2 || o.batch < 1 || o.steps < 1)
    throw Error("--seq/--batch/--steps", "must be at least 2/1/1");
  if (!(o.lr > 0)) throw Error("--lr", "must be positive");
  if (o.hidden % o.heads != 0) throw Error("--hidden", "must be divisible by --heads");
  if (o.tokenizer.empty() && o.vocab_size < 260)
    throw Error("--vocab", "must be at least 260 (4 special tokens and 256 bytes)");
  // Read before tokenizer training and corpus tokenization, so a bad path fails at once.
  const nlohmann::json collapse_json =
      o.collapse.empty() ? nlohmann::json(nullptr) : read_json_file(o.collapse);
  fs::create_directories(o.out_dir);
  const std::string tok_path = (fs::path(o.out_dir) / "tokenizer.json").string();

  // The tokenizer: given, or learned from the corpus with BLOOM's pipeline.
  nlohmann::json tok_json;
  if (!o.tokenizer.empty()) {
    tok_json = read_json_file(o.tokenizer);
  } else {
    // Every document, --max-tokens or not: which documents a token limit keeps depends on the
    // tokenizer being learned.
    std::vector<std::string> texts;
    for_each_document(o.corpus, o.text_field,
                      [&](std::string_view doc) { texts.emplace_back(doc); });
    tok_json = train_bpe(texts, {o.vocab_size, 2});
    if (!o.quiet)
      std::fprintf(stderr, "tokenizer: %zu entries learned in %.1f s\n",
                   tok_json["model"]["vocab"].size(), seconds_since(t0));
  }
  const Tokenizer tok =
      Tokenizer::from_json(tok_json, o.tokenizer.empty() ? tok_path : o.tokenizer);
  write_file_atomic(tok_path, tok_json.dump() + "\n");

  const ModelConfig c = bloom_config(o.hidden, o.heads, o.layers, int64_t(tok.vocab_size()));
  // The corpus's tokens in a file of the output folder, mapped and then unlinked: pretrain does
  // not resume, and the mapping keeps 100 M tokens out of the process's own memory.
  const CorpusOptions copt{o.text_field, o.max_tokens, 0, !o.quiet};
  const std::string cache_path = (fs::path(o.out_dir) / "corpus.tokens").string();
  const TokenCache tokens = TokenCache::create(cache_path, o.corpus, tok, c.eos_id, copt,
                                               token_source(o.corpus, copt, tok, c.eos_id));
  fs::remove(cache_path);
  const std::string where = o.corpus.size() == 1 ? o.corpus[0] : "corpus";
  // With --bos each sequence is <s> + seq-1 corpus tokens, as BLOOM's pretraining data layout
  // would have it if its tokenizer added a BOS.
  const Chunks chunks(tokens.tokens(), o.seq - (o.bos ? 1 : 0), where);
  auto sequence = [&](size_t i) {
    std::vector<int32_t> s(size_t(o.seq), int32_t(c.bos_id));
    const auto ch = chunks[i];
    std::copy(ch.begin(), ch.end(), s.end() - ptrdiff_t(ch.size()));
    return s;
  };
  const size_t n_val = std::max<size_t>(1, size_t(double(chunks.size()) * o.val_fraction));
  if (chunks.size() < n_val + size_t(o.batch))
    throw Error(where, "too small: " + std::to_string(chunks.size()) + " chunks of --seq " +
                           std::to_string(o.seq) + " for a batch of " + std::to_string(o.batch) +
                           " plus validation");
  const size_t n_train = chunks.size() - n_val;  // the tail is held out
  std::vector<std::vector<int32_t>> val;
  for (size_t i = n_train; i < chunks.size(); ++i) val.push_back(sequence(i));

  SinkTerm sink;
  if (!o.collapse.empty()) {
    const Plan p = Plan::from_json(collapse_json, o.collapse, int(c.n_layer), int(c.n_head));
    sink.heads.assign(c.n_layer * c.n_head, 0);
    for (const HeadRef& h : p.target_list()) sink.heads[h.layer * c.n_head + h.head] = 1;
    sink.strength = o.collapse_strength;
  }
  const int64_t sink_heads = std::count(sink.heads.begin(), sink.heads.end(), uint8_t(1));

  TrainWeights w = init_weights(c, o.seed);
  std::vector<std::vector<float>*> params;
  std::vector<size_t> decay_idx, plain_idx;
  // Weight decay applies to matrices only (GPT-style), not to LayerNorms and biases.
  for (auto& p : w.params()) {
    (p.matrix ? decay_idx : plain_idx).push_back(params.size());
    params.push_back(p.buf);
  }
  auto pick = [](const std::vector<std::vector<float>*>& all, const std::vector<size_t>& idx) {
    std::vector<std::vector<float>*> out;
    for (size_t i : idx) out.push_back(all[i]);
    return out;
  };
  auto sizes_of = [](const std::vector<std::vector<float>*>& bufs) {
    std::vector<size_t> s;
    for (auto* b : bufs) s.push_back(b->size());
    return s;
  };
  AdamW opt_decay({o.lr, 0.9, 0.999, 1e-8, o.weight_decay}, sizes_of(pick(params, decay_idx)));
  AdamW opt_plain({o.lr, 0.9, 0.999, 1e-8, 0.0}, sizes_of(pick(params, plain_idx)));

  // The sequences of a batch run in parallel (tiny matrices parallelise badly inside).
  const int threads = std::max(1, std::min(omp_get_max_threads(), o.batch));
  std::vector<Gradients> grads;
  for (int t = 0; t < threads; ++t) grads.push_back(Gradients::all(w));
  const int64_t tokens_per_step = int64_t(o.batch) * (o.seq - 1);

  nlohmann::json curve = nlohmann::json::array();
  auto evaluate = [&](int64_t step, double train_loss) {
    TrainWeightsSource src(w);
    const double ppl = perplexity(src, val, o.seq).ppl;
    curve.push_back({{"step", step}, {"train_loss", train_loss}, {"val_ppl", ppl}});
    return ppl;
  };

  int64_t epoch = 0;
  std::vector<size_t> order = epoch_order(n_train, o.seed, epoch);
  size_t next = 0;
  double loss_acc = 0, sink_acc = 0;
  int64_t acc_n = 0;
  const auto t_train = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < o.steps; ++step) {
    std::vector<std::vector<int32_t>> seqs;  // copied out of the mapped stream
    while (int(seqs.size()) < o.batch) {
      if (next == order.size()) {
        order = epoch_order(n_train, o.seed, ++epoch);
        next = 0;
      }
      seqs.push_back(sequence(order[next++]));
    }
    std::vector<const std::vector<int32_t>*> batch;
    for (const auto& q : seqs) batch.push_back(&q);
    const bool sink_on = sink_heads > 0 && (o.collapse_steps < 0 || step < o.collapse_steps);
    const double step_total = batch_loss_and_grad(w, batch, 1.0 / double(tokens_per_step), grads,
                                                  sink_on ? &sink : nullptr);
    const double step_aux = sink_on ? sink.loss : 0.0;
    const double step_lm = step_total - step_aux;
    auto g0 = grads[0].buffers();
    if (!std::isfinite(step_lm + step_aux))
      throw Error(o.out_dir, "training diverged at step " + std::to_string(step) +
                                 " (non-finite loss); try a lower --lr");
    clip_grad_norm(g0, o.clip);
    const double lr = o.lr * lr_factor(step, o.warmup, o.steps);
    opt_decay.step(pick(params, decay_idx), pick(g0, decay_idx), lr);
    opt_plain.step(pick(params, plain_idx), pick(g0, plain_idx), lr);
    loss_acc += step_lm;
    sink_acc += step_aux;
    ++acc_n;

    const bool last = step + 1 == o.steps;
    if ((step + 1) % o.eval_every == 0 || last) {
      const double train_loss = loss_acc / double(acc_n);
      const double ppl = evaluate(step + 1, train_loss);
      if (!o.quiet) {
        const double el = seconds_since(t_train);
        const double rate = double((step + 1) * tokens_per_step) / el;
        // Geometric-mean first-token probability of the collapse heads, from the mean -log p0.
        char sink_note[48] = "";
        if (sink_acc > 0)
          std::snprintf(
              sink_note, sizeof sink_note, "  sink p0 %.3f",
              std::exp(-sink_acc / double(acc_n) / (o.collapse_strength * double(sink_heads))));
        std::fprintf(stderr,
                     "step %lld/%lld  loss %.4f  val ppl %.2f%s  lr %.2e  %.0f tok/s  ETA %.0f s\n",
                     (long long)(step + 1), (long long)o.steps, train_loss, ppl, sink_note, lr,
                     rate, el / double(step + 1) * double(o.steps - step - 1));
      }
      loss_acc = sink_acc = 0;
      acc_n = 0;
    }
  }

  save_checkpoint(o.out_dir, w, c.to_json({{"initializer_range", 0.02}}), nullptr, DType::F32,
                  tok_path);
  const nlohmann::json recipe = {
      {"corpus", o.corpus},
      {"tokenizer", o.tokenizer.empty() ? nlohmann::json("learned") : nlohmann::json(o.tokenizer)},
      {"vocab_size", c.vocab},
      {"layers", o.layers},
      {"hidden", o.hidden},
      {"heads", o.heads},
      {"seq", o.seq},
      {"batch", o.batch},
      {"steps", o.steps},
      {"lr", o.lr},
      {"warmup", o.warmup},
      {"weight_decay", o.weight_decay},
      {"clip", o.clip},
      {"seed", o.seed},
      {"bos", o.bos},
      {"threads", threads},
      {"collapse", o.collapse.empty() ? nlohmann::json(nullptr) : collapse_json["targets"]},
      {"collapse_strength", o.collapse_strength},
      {"collapse_steps", o.collapse_steps},
      {"text_field", o.text_field},
      {"max_tokens", o.max_tokens},
      {"corpus_tokens", tokens.tokens().size()},
      {"train_chunks", n_train},
      {"val_chunks", val.size()},
      {"curve", curve},
      {"seconds", seconds_since(t0)}};
  write_file_atomic((fs::path(o.out_dir) / "recipe.json").string(), recipe.dump(1) + "\n");
  if (!o.quiet) std::fprintf(stderr, "wrote %s in %.0f s\n", o.out_dir.c_str(), seconds_since(t0));
}

}  // namespace hs
