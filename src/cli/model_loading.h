// Opening the model and tokenizer named on the command line, with timings for the user.
#pragma once

#include <memory>
#include <string>

#include "model/model.h"
#include "text/tokenizer.h"

namespace hs::cli {

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when not requested
  double seconds = 0;
};

// stream = true: convert each layer when used and drop it (right for one pass over the model,
// e.g. a diagnosis); false: keep converted weights when they fit (several passes, e.g. ppl).
LoadedModel load_model(const std::string& spec, bool need_tokenizer, bool stream = false);

}  // namespace hs::cli
