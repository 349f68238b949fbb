// Pretraining a small BLOOM from scratch on CPU: the recipe behind the built-in demo model.
// A byte-level BPE tokenizer with BLOOM's pipeline is learned from the corpus (or given), the
// weights start from BLOOM's init (normal 0.02, LayerNorms 1/0, biases 0) and all of them are
// trained with AdamW + warm-up/cosine. Optionally chosen heads are driven onto the first token
// by an auxiliary loss (SinkTerm): *induced* collapse, for a demo that has something to repair.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hs {

struct PretrainOptions {
  std::vector<std::string> corpus;  // files or folders: text, JSON lines, .gz (text/corpus.h)
  std::string text_field = "text";  // the document's field in a JSON line
  int64_t max_tokens = 0;           // train on the corpus's first N tokens; 0 = all
  std::string out_dir;
  std::string tokenizer;  // an existing tokenizer.json; empty = learn one of vocab_size
  int64_t vocab_size = 2048;
  int64_t layers = 4, hidden = 128, heads = 16;
  int seq = 128, batch = 16;
  int64_t steps = 1000;
  double lr = 1e-3, weight_decay = 0.1, clip = 1.0;
  int64_t warmup = 100;
  uint64_t seed = 0;
  bool bos = false;  // every sequence starts with <s> (a constant first token; diagnose with --bos)
  std::string collapse;  // plan JSON whose "targets" are the heads to collapse; empty = none
  double collapse_strength = 0.1;
  int64_t collapse_steps = -1;  // the sink term is on for steps < this (-1 = all)
  int64_t eval_every = 100;     // validation loss every N steps (and at the end)
  double val_fraction = 0.05;   // the corpus tail held out for validation
  bool quiet = false;
};

// Writes OUT_DIR as a Hugging Face checkpoint (config.json, model.safetensors in F32,
// tokenizer.json) plus recipe.json (every option, the validation curve, seconds). Deterministic
// for a seed and thread count: sequences of a batch run in parallel, one per thread.
void run_pretrain(const PretrainOptions& o);

}  // namespace hs
