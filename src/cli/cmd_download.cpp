// headsurgeon download REPO_ID[@REVISION] [--include GLOB]...: a model from the Hugging Face hub
// into the local cache that transformers and huggingface_hub use too.
#include <iostream>

#include "cli/common.h"
#include "cli/model_loading.h"
#include "io/model_files.h"
#include "util/error.h"

namespace hs::cli {

void add_download(CLI::App& app) {
  struct Args {
    std::string id;
    std::vector<std::string> include;
    bool quiet = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "download",
      "Download a model from the Hugging Face hub ($HF_ENDPOINT, default https://huggingface.co) "
      "into the local cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub) "
      "and print its snapshot directory. By default the files a model needs: config.json, the "
      "safetensors weights (and their index), tokenizer.json, tokenizer_config.json and "
      "generation_config.json; PyTorch pickles (*.bin, *.pt) never. Files already cached are "
      "not fetched again, an interrupted download resumes where it stopped. $HF_TOKEN (or "
      "$HF_HOME/token) is sent for gated and private repos. With --offline (or "
      "HF_HUB_OFFLINE=1) nothing is downloaded: the cached snapshot is printed.");
  sub->add_option("REPO_ID", a->id, "org/name, optionally @revision (a branch, tag or commit)")
      ->required()
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            try {
              return parse_hub_id(s) ? "" : "not a hub id (org/name or org/name@revision)";
            } catch (const Error& e) {
              return e.what();
            }
          },
          "REPO_ID"));
  sub->add_option("--include", a->include,
                  "only the files matching this glob ('*' matches '/' too), instead of the "
                  "model's files (repeatable)");
  sub->add_flag("-q,--quiet", a->quiet, "no progress line or summary on stderr");
  sub->callback(interruptible(
      [a] { std::cout << download_model(a->id, a->include, a->quiet) << std::endl; }));
}

}  // namespace hs::cli
