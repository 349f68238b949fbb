#include "cli/model_loading.h"

#include <chrono>

#include "cli/common.h"

namespace hs::cli {

LoadedModel load_model(const std::string& spec, bool need_tokenizer, bool stream) {
  const auto t0 = std::chrono::steady_clock::now();
  LoadedModel m;
  ModelOptions opts;
  if (stream) opts.cache_bytes = 0;
  m.model = std::make_unique<Model>(spec, opts);
  if (need_tokenizer)
    m.tokenizer =
        std::make_unique<Tokenizer>(Tokenizer::from_file(m.model->checkpoint().tokenizer_path()));
  m.seconds = seconds_since(t0);
  return m;
}

}  // namespace hs::cli
