// headsurgeon pretrain --corpus PATH -o DIR: the recipe behind the built-in demo model.
#include "cli/common.h"
#include "pretrain/pretrain.h"

namespace hs::cli {

void add_pretrain(CLI::App& app) {
  auto o = std::make_shared<PretrainOptions>();
  CLI::App* sub = app.add_subcommand(
      "pretrain",
      "Train a small BLOOM (ALiBi, BLOOM's block) from scratch on CPU: learns a byte-level BPE "
      "tokenizer with BLOOM's pipeline from the corpus, trains every weight, writes a Hugging "
      "Face checkpoint plus recipe.json. --collapse drives the plan's target heads onto the "
      "first token with an auxiliary loss (induced collapse, see docs/demo-model.md).");
  add_corpus_options(sub, o->corpus, o->text_field, o->max_tokens, "train on only");
  sub->add_option("-o,--out", o->out_dir, "output checkpoint directory")->required();
  sub->add_option("--tokenizer", o->tokenizer, "use this tokenizer.json instead of learning one");
  sub->add_option("--vocab", o->vocab_size, "vocabulary size of the learned tokenizer")
      ->capture_default_str();
  sub->add_option("--layers", o->layers, "transformer blocks")->capture_default_str();
  sub->add_option("--hidden", o->hidden, "hidden size")->capture_default_str();
  sub->add_option("--heads", o->heads, "attention heads per block")->capture_default_str();
  sub->add_option("--seq", o->seq, "tokens per training sequence")->capture_default_str();
  sub->add_option("--batch", o->batch, "sequences per optimizer step")->capture_default_str();
  sub->add_option("--steps", o->steps, "optimizer steps")->capture_default_str();
  sub->add_option("--lr", o->lr, "peak AdamW learning rate")->capture_default_str();
  sub->add_option("--warmup", o->warmup, "linear warm-up steps before the cosine decay")
      ->capture_default_str();
  sub->add_option("--weight-decay", o->weight_decay, "AdamW weight decay (matrices only)")
      ->capture_default_str();
  sub->add_option("--clip", o->clip, "clip the global gradient norm at this value")
      ->capture_default_str();
  sub->add_option("--seed", o->seed, "seed of the init and the data order")->capture_default_str();
  sub->add_flag("--bos", o->bos,
                "start every sequence with <s> (a constant first token: sinks form on it; "
                "diagnose the model with --bos)");
  sub->add_option("--collapse", o->collapse,
                  "plan JSON: its target heads are pushed onto the first token (induced collapse)");
  sub->add_option("--collapse-strength", o->collapse_strength,
                  "weight of the -log p(first token) term per collapsed head")
      ->capture_default_str();
  sub->add_option("--collapse-steps", o->collapse_steps,
                  "the collapse term is on for the first N steps (-1: all)")
      ->capture_default_str();
  sub->add_option("--eval-every", o->eval_every, "validation perplexity every N steps")
      ->capture_default_str();
  sub->add_flag("-q,--quiet", o->quiet, "no progress lines");
  sub->callback(interruptible([o] { run_pretrain(*o); }));
}

}  // namespace hs::cli
