// headsurgeon tokenize MODEL FILE: the token ids of a whole file, as JSON.
#include <iostream>

#include "cli/common.h"
#include "cli/model_loading.h"
#include "model/checkpoint.h"
#include "text/tokenizer.h"
#include "util/error.h"

namespace hs::cli {

void add_tokenize(CLI::App& app) {
  struct Args {
    std::string model, file;
    bool bos = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "tokenize",
      "Print {\"ids\": [...]} for the whole content of FILE, tokenized as the model does.");
  sub->add_option("MODEL", a->model,
                  "checkpoint directory or hub id (its tokenizer.json; downloaded when not "
                  "cached), or a tokenizer.json file")
      ->required();
  sub->add_option("FILE", a->file, "UTF-8 text file ('-' = standard input)")->required();
  sub->add_flag("--bos", a->bos, "prepend the id of <s>");
  sub->callback([a] {
    // Only the tokenizer is needed: a hub id not in the cache gets no weights here.
    if (!a->model.ends_with(".json")) fetch_model(a->model, {"config.json", "tokenizer.json"});
    const std::string path =
        a->model.ends_with(".json") ? a->model : resolve_model_dir(a->model) + "/tokenizer.json";
    const Tokenizer tok = Tokenizer::from_file(path);
    const std::string text = read_file(a->file == "-" ? "/dev/stdin" : a->file, true);
    std::vector<int32_t> ids;
    if (a->bos) {
      const auto bos = tok.token_to_id("<s>");
      if (!bos) throw Error(path, "no <s> token in this tokenizer");
      ids.push_back(*bos);
    }
    const auto enc = tok.encode(text);
    ids.insert(ids.end(), enc.begin(), enc.end());
    std::cout << nlohmann::json{{"ids", ids}}.dump() << "\n";
  });
}

}  // namespace hs::cli
