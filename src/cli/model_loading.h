// Opening the model and tokenizer named on the command line, with timings for the user.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/cpu/weights.h"
#include "text/tokenizer.h"

namespace hs::cli {

// Where the model runs (--device) and its weight type on a GPU (--gpu-dtype).
struct DeviceArgs {
  std::string device = "auto", gpu_dtype = "auto";
  std::string device_from = "--device";  // or HEADSURGEON_DEVICE, for error messages
};
void add_device_options(CLI::App* sub, DeviceArgs& a);

struct LoadedModel {
  std::unique_ptr<Model> model;          // the checkpoint (fp32 CPU weights when on the CPU)
  std::unique_ptr<Engine> engine;        // runs the model on the chosen device
  std::unique_ptr<Tokenizer> tokenizer;  // null when not requested
  double seconds = 0;
};

// The hub id SPEC downloaded into the local Hugging Face cache (the files a model needs, or
// those matching the `include` globs), with a progress line and a summary on stderr unless
// quiet; returns its snapshot directory. Offline (HF_HUB_OFFLINE, --offline): the cached
// snapshot, or an error saying it is not in the cache.
std::string download_model(const std::string& spec, const std::vector<std::string>& include,
                           bool quiet);
// SPEC made ready for resolve_model_dir: a hub id that is not in the cache, or is cached without
// its config and weights (an interrupted download), is downloaded first unless offline. With
// `only`, just those files are wanted (and fetched when one is missing).
void fetch_model(const std::string& spec, const std::vector<std::string>& only = {});

// SPEC is fetched first (fetch_model).
// stream = true: convert each layer when used and drop it (right for one pass over the model,
// e.g. a diagnosis); false: keep converted weights when they fit (several passes, e.g. ppl).
// On a GPU the CPU side never converts: the weights go to the device once.
LoadedModel load_model(const std::string& spec, bool need_tokenizer, bool stream = false,
                       const DeviceArgs& dev = {"cpu", "auto", "--device"});

// Sequences to score, each with the name of where it came from (FILE, FILE:LINE, heldout:N).
struct ScoredTexts {
  std::vector<std::vector<int32_t>> seqs;
  std::vector<std::string> sources;
};

// Each --text FILE as one sequence, then held-out prompts, each its own sequence: the paper's 12
// when `heldout` is "", the non-blank lines of the file it names otherwise (sources FILE:N);
// with bos, <s> is prepended. Errors name the file (empty, not UTF-8, fewer than two tokens).
void add_texts(ScoredTexts& out, const LoadedModel& m, const std::vector<std::string>& files,
               const std::optional<std::string>& heldout, bool bos);

}  // namespace hs::cli
